import pytest
import soundfile as sf

TEXT = "My mother lost the black umbrella in the garden."


def test_the_speak_endpoint_gives_the_samples_of_flowtts_infer_with_the_same_seed(app_url, tmp_path):
    client_module = pytest.importorskip("gradio_client")
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.cli import main

    clip, clip_text = builtin_reference()
    client = client_module.Client(app_url, verbose=False)
    args = [client_module.handle_file(clip), clip_text, TEXT, None, "builtin:student", None, None, None,
            None, None, None, 1.0, 11, False, 0.15, "float32"]  # fmt: skip
    for use, flags in (("as the model file says", []), ("continue it (F5-TTS)", ["--continue-reference"])):
        wav, png, summary, seed, ref_text, info = client.predict(*args, use, api_name="/speak")
        assert seed == 11 and ref_text == clip_text and "4 steps" in info and "RTF" in summary
        out = tmp_path / "cli.wav"
        cli_args = ["infer", "--model", "builtin:student", "-t", TEXT, "-o", str(out), "--seed", "11", "-q", *flags]
        assert main(cli_args) == 0
        page, rate = sf.read(wav)
        cli, cli_rate = sf.read(out)
        assert rate == cli_rate == 24_000 and page.shape == cli.shape
        assert abs(page - cli).max() < 1e-4, use  # same samples (16-bit files: one quantisation step is 3e-5)


def test_a_bad_request_is_answered_with_its_message_and_the_app_keeps_serving(app_url):
    client_module = pytest.importorskip("gradio_client")
    client = client_module.Client(app_url, verbose=False)
    args = [None, "", "", None, "builtin:student", None, None, None, None, None, None, 1.0, 1, False, 0.15, "float32"]
    args.append("as the model file says")
    with pytest.raises(Exception, match="the text to say is empty"):
        client.predict(*args, api_name="/speak")
    bad_model = list(args)
    bad_model[2], bad_model[4] = "Hello.", "checkpoint file"
    with pytest.raises(Exception, match="choose a checkpoint file"):
        client.predict(*bad_model, api_name="/speak")
    args[2] = "The red bird sang."
    assert client.predict(*args, api_name="/speak")[3] == 1  # still serving
