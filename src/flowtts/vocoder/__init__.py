"""The built-in neural vocoder: log-mel frames -> STFT magnitude and phase -> one inverse STFT.

* :mod:`flowtts.vocoder.network`: :class:`~flowtts.vocoder.network.VocoderConfig` and
  :class:`~flowtts.vocoder.network.MelVocoder` (a ConvNeXt stack over the mel frames);
* :mod:`flowtts.vocoder.files`: safetensors files that record the mel front end they expect.

Training lives in :mod:`flowtts.train.vocoder`; nothing here imports it.
"""
