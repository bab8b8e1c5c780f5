"""The progress bar every stage shows."""

from dasd.progress import Progress


def test_a_bar_shows_tokens_per_second_only_once_there_are_tokens(capsys):
    bar = Progress(2, "filter", unit="rec")
    bar.update()
    bar.update()
    bar.close()
    shown = capsys.readouterr().err
    assert "2/2" in shown and "tok/s" not in shown
    bar = Progress(2, "sample")
    bar.update(tokens=10)
    bar.update(tokens=5)
    bar.close()
    assert "tok/s" in capsys.readouterr().err
