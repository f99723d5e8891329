import pytest

from b2m.data.captions import read_captions
from b2m.core.errors import B2MError


def test_read_captions_strips_genre_quotes(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(
        "genre,track,caption\n"
        "'blues',12,\"Slow blues, with a crying guitar.\"\n"
        "classical',3,  A string quartet.  \n"
        "jazz,00007,Bebop\n"
    )
    assert read_captions(path) == {
        ("blues", 12): "Slow blues, with a crying guitar.",
        ("classical", 3): "A string quartet.",
        ("jazz", 7): "Bebop",
    }


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("genre,track,caption\n", "has no rows"),
    ("genre,caption\nblues,slow\n", r"lacks column\(s\) \['track'\]"),
    ("genre,track,caption\nblues,twelve,slow\n", r":2: track 'twelve' is not an integer"),
    ("genre,track,caption\nblues,1,a\n'blues',1,b\n", ":3: a second caption for blues track 1"),
])
def test_read_captions_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "captions.csv"
    path.write_text(text)
    with pytest.raises(B2MError, match=message) as err:
        read_captions(path)
    assert str(path) in str(err.value)


def test_missing_captions_file(tmp_path):
    with pytest.raises(B2MError, match="captions file missing"):
        read_captions(tmp_path / "nope.csv")
