// Marks every player once its audio has loaded or failed; the status line counts them.
(function () {
  var players = document.querySelectorAll('audio');
  function update() {
    var ok = document.querySelectorAll('audio[data-state="ok"]').length;
    var bad = document.querySelectorAll('audio[data-state="missing"]').length;
    document.getElementById('audio-status').textContent =
      ok + ' of ' + players.length + ' audio files loaded, ' + bad + ' missing';
  }
  players.forEach(function (a) {
    function good() { a.setAttribute('data-state', 'ok'); update(); }
    function bad() { a.setAttribute('data-state', 'missing'); update(); }
    a.addEventListener('loadedmetadata', good);
    a.addEventListener('error', bad);
    if (a.error) { bad(); } else if (a.readyState >= 1) { good(); }
  });
  update();
})();
