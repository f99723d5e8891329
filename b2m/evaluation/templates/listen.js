// The listening test (listen.html). The session draw below is the one copy of it: the page runs it, and
// the tests run this file in node to check `listening_session`, its Python twin in
// b2m/evaluation/listening.py; any change here must be made there.

// FNV-1a over UTF-16 code units: the PRNG's seed from the page's seed and the listener ID.
function hash(text) {
  var h = 2166136261;
  for (var i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 16777619); }
  return h >>> 0;
}
function mulberry32(a) {
  return function () {
    a = (a + 0x6D2B79F5) | 0;
    var t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function shuffle(items, rand) {
  for (var i = items.length - 1; i > 0; i--) {
    var j = Math.floor(rand() * (i + 1)), t = items[i];
    items[i] = items[j]; items[j] = t;
  }
  return items;
}
// The session: each method's trials shuffled, then one of every method per round (in a fresh
// order each round), so the methods alternate and their counts differ by at most one; the target
// is A in half of the trials.
function draw(data, rand) {
  var groups = new Map();
  data.trials.forEach(function (t) {
    if (!groups.has(t.method)) { groups.set(t.method, []); }
    groups.get(t.method).push(t);
  });
  var lists = Array.from(groups.values()).map(function (l) { return shuffle(l.slice(), rand); });
  var n = Math.min(data.n_per_session, data.trials.length), picked = [];
  for (var round = 0; picked.length < n; round++) {
    shuffle(lists.filter(function (l) { return round < l.length; }), rand).forEach(function (l) {
      if (picked.length < n) { picked.push(l[round]); }
    });
  }
  var positions = shuffle(picked.map(function (_, i) { return i % 2 ? 'A' : 'B'; }), rand);
  return picked.map(function (t, i) { return {trial: t, target: positions[i]}; });
}
function drawSession(data, listener) {
  return draw(data, mulberry32(hash(String(data.seed) + ':' + listener)));
}

// The test itself, in the page only (node, running the draw in the tests, has no document). The pool
// and settings come from the JSON element `listening-data`.
if (typeof document !== 'undefined') {
  (function () {
    'use strict';
    var data = JSON.parse(document.getElementById('listening-data').textContent);
    var session = null, answers = [], result = null, listener = '', started = '', shownAt = 0;

    function byId(id) { return document.getElementById(id); }
    function url(rel) { return rel.split('/').map(encodeURIComponent).join('/'); }
    function play(id, rel) { var a = byId(id); a.pause(); a.src = url(rel); }
    function show(i) {
      var s = session[i], el = byId('trial');
      el.dataset.index = i;
      el.dataset.subject = s.trial.subject;
      el.dataset.method = s.trial.method;
      el.dataset.clipId = s.trial.clip_id;
      el.dataset.targetPosition = s.target;
      byId('progress').textContent = 'trial ' + (i + 1) + ' of ' + session.length;
      play('excerpt', s.trial.excerpt);
      play('audio-A', s.target === 'A' ? s.trial.target : s.trial.foil);
      play('audio-B', s.target === 'B' ? s.trial.target : s.trial.foil);
      shownAt = performance.now();
    }
    function start(event) {
      event.preventDefault();
      listener = byId('listener').value.trim();
      if (!listener) { byId('message').textContent = 'Enter your listener ID first.'; return; }
      session = drawSession(data, listener);
      started = new Date().toISOString();
      byId('intro').hidden = true;
      byId('trial').hidden = false;
      show(0);
    }
    function choose(choice) {
      if (session === null || answers.length >= session.length) { return; }
      var i = answers.length, s = session[i];
      answers.push({index: i, subject: s.trial.subject, method: s.trial.method, clip_id: s.trial.clip_id,
                    foil_clip_id: s.trial.foil_clip_id, target_position: s.target, choice: choice,
                    response_ms: Math.round(performance.now() - shownAt)});
      if (answers.length < session.length) { show(answers.length); } else { finish(); }
    }
    function finish() {
      ['excerpt', 'audio-A', 'audio-B'].forEach(function (id) { byId(id).pause(); });
      result = {format: data.format, page: data.title, seed: data.seed, listener: listener, started: started,
                finished: new Date().toISOString(), trials: answers};
      byId('trial').hidden = true;
      byId('done').hidden = false;
      byId('results').value = JSON.stringify(result);
    }
    function download() {
      var link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([JSON.stringify(result, null, 1)], {type: 'application/json'}));
      link.download = 'listening_' + listener.replace(/[^A-Za-z0-9_-]+/g, '_') + '_' +
                      result.finished.replace(/[:.]/g, '-') + '.json';
      document.body.appendChild(link);
      link.click();
      link.remove();
      // Revoked later: the browser reads the blob after the click returns.
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    }
    byId('intro').addEventListener('submit', start);
    byId('choose-A').addEventListener('click', function () { choose('A'); });
    byId('choose-B').addEventListener('click', function () { choose('B'); });
    byId('download').addEventListener('click', download);
    byId('start').disabled = false;
  })();
}
