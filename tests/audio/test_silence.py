import pytest
import torch

from flowtts.audio.silence import remove_silence, silent_windows

RATE = 24000


def _tone(seconds, amplitude=0.3):
    return amplitude * torch.sin(torch.arange(int(seconds * RATE)) / 7.0)


def _quiet(seconds, amplitude=1e-4, seed=0):
    return amplitude * torch.randn(int(seconds * RATE), generator=torch.Generator().manual_seed(seed))


def test_long_silences_are_shortened_and_sound_is_kept_in_order():
    parts = [_quiet(1.5), _tone(0.5), _quiet(2.0, seed=1), _tone(0.4), _quiet(0.6, seed=2), _tone(0.3), _quiet(1.2)]
    wave = torch.cat(parts)
    out = remove_silence(wave, RATE)
    # leading 1.5 -> 0.5, inner 2.0 -> 0.5 + 0.5, inner 0.6 untouched (under 1 s), trailing 1.2 -> 0.5
    expected = [0.5, 0.5, 1.0, 0.4, 0.6, 0.3, 0.5]
    assert out.numel() == round(sum(expected) * RATE)
    loud = lambda w: w[w.abs() > 0.01]  # noqa: E731
    assert torch.equal(loud(out), loud(wave))
    # the kept silence is the original's: the inner pause keeps its first and last 0.5 s
    start = round(1.0 * RATE)  # after the kept leading silence and the first tone
    assert torch.equal(out[start : start + RATE // 2], parts[2][: RATE // 2])
    assert torch.equal(out[start + RATE // 2 : start + RATE], parts[2][-RATE // 2 :])


def test_quiet_but_audible_and_short_pauses_are_left_alone():
    wave = torch.cat([_tone(0.5), _quiet(2.0, amplitude=0.01), _tone(0.5)])  # about -40 dBFS: not silence
    assert torch.equal(remove_silence(wave, RATE), wave)
    assert remove_silence(wave, RATE, threshold_db=-30).numel() == round(2.0 * RATE)  # a higher threshold cuts it
    silent = _quiet(3.0)
    assert torch.equal(remove_silence(silent, RATE), silent)


def test_silent_windows_counts_a_short_last_window():
    wave = torch.cat([torch.zeros(250), 0.5 * torch.ones(5)])
    flags = silent_windows(wave, 100, -50.0)
    assert flags.tolist() == [True, True, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_silence=0), "min_silence must be positive"),
        (dict(keep=0.6), "keep must be between 0 and min_silence / 2"),
        (dict(window=-1), "window must be positive"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        remove_silence(_tone(0.1), RATE, **kwargs)
    with pytest.raises(ValueError, match="one-dimensional"):
        remove_silence(torch.zeros(2, 10), RATE)


def test_trim_edges_drops_leading_and_trailing_silence_only():
    from flowtts.audio.silence import trim_edges

    inner = torch.cat([_tone(0.5), _quiet(0.7), _tone(0.25)])
    wave = torch.cat([_quiet(0.5, seed=3), inner, _quiet(0.8, seed=4)])
    assert torch.equal(trim_edges(wave, RATE), inner)
    assert torch.equal(trim_edges(_quiet(1.0), RATE), _quiet(1.0))


def test_speech_bounds_are_where_the_trimmed_clip_lies():
    from flowtts.audio.silence import speech_bounds

    lead, inner = _quiet(0.5, seed=3), torch.cat([_tone(0.5), _quiet(0.7), _tone(0.25)])
    wave = torch.cat([lead, inner, _quiet(0.8, seed=4)])
    start, end = speech_bounds(wave, RATE)
    assert (start, end) == (lead.numel(), lead.numel() + inner.numel())
    assert speech_bounds(_quiet(1.0), RATE) == (0, _quiet(1.0).numel())


def test_long_clips_are_cut_inside_a_pause_preferring_long_pauses():
    from flowtts.audio.silence import clip_at_pause

    long_pause = torch.cat([_tone(5.0), _quiet(1.2), _tone(4.0), _quiet(0.3), _tone(4.0)])
    assert clip_at_pause(long_pause, RATE, 12.0).numel() == round(5.6 * RATE)  # middle of the 1.2 s pause
    short_pauses = torch.cat([_tone(4.0), _quiet(0.3), _tone(3.0), _quiet(0.2), _tone(7.0)])
    assert clip_at_pause(short_pauses, RATE, 12.0).numel() == round(7.4 * RATE)  # the latest pause >= 0.1 s
    none = _tone(14.0)
    assert clip_at_pause(none, RATE, 12.0).numel() == 12 * RATE
    assert clip_at_pause(none, RATE, 20.0) is none
