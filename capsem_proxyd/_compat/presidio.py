"""Presidio's spaCy engine without its silent model download, and its e-mail recognizer without the network.

* ``NoDownloadSpacyNlpEngine``: ``SpacyNlpEngine.load`` calls its private
  static ``_download_spacy_model_if_needed``, which runs ``spacy download``
  (pip, over the network) when a model is missing. Ours raises instead; the
  PII policy checks for the model first and names it in one line.
* ``OfflineEmailRecognizer``: ``EmailRecognizer.validate_result`` calls
  tldextract's module-level extractor, which fetches the Public Suffix List
  over HTTP on first use. Ours reads only tldextract's bundled snapshot (public
  ``TLDExtract`` arguments); what it relies on of Presidio is that
  ``validate_result`` is the only place the recognizer consults tldextract.

presidio-analyzer is pinned exactly in pyproject.toml (Presidio ships every
change, renames included, as a patch release); ``tests/_compat/test_presidio.py``
is the canary: it fails when the release differs, when
``_download_spacy_model_if_needed`` is no longer the static method ``load``
calls, or when ``validate_result`` reads tldextract some other way. The engine
subclass can go when Presidio stops downloading models (or offers a switch);
the recognizer when it lets a caller pass the extractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import spacy
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer
from tldextract import TLDExtract


def spacy_model_installed(model_name: str) -> bool:
    """Whether ``model_name`` loads without a download: an installed package or a model folder (Presidio's test)."""
    return bool(spacy.util.is_package(model_name)) or Path(model_name).exists()


class NoDownloadSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that fails to load a missing model instead of downloading it."""

    @staticmethod
    def _download_spacy_model_if_needed(model_name: str) -> None:
        if not spacy_model_installed(model_name):
            raise ValueError(f"spaCy model '{model_name}' is not installed")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer with a Public Suffix List that never leaves the disk."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No remote lists, no cache directory: tldextract's bundled snapshot only.
        self.offline_extract = TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    def validate_result(self, pattern_text: str) -> bool:
        return self.offline_extract(pattern_text).fqdn != ""
