"""Provider profiles: where to connect, how to authenticate, what each provider supports.

* `openai`: wss://api.openai.com/v1/realtime?model=gpt-realtime, `Authorization: Bearer KEY`.
  G.711 passthrough (pcmu/pcma matching the call's codec). Input transcription
  (`gpt-4o-mini-transcribe`) is turned on by the client when sessions may be re-opened.
* `yandex`: wss://ai.api.cloud.yandex.net/v1/realtime?model=gpt://FOLDER/speech-realtime-250923,
  `Authorization: Api-Key KEY` or `Bearer IAM_TOKEN`. PCM16 only: 24 kHz in, the output rate
  session.updated reports (44.1 kHz seen). No input/output buffer clear events.
* `url`: any compatible server at a ws:// or wss:// URL, optional bearer token.
* `local`: the embedded local provider (gateway.realtime.local), same wire as openai (its
  transcription too). `url` and `yandex` get no automatic transcription: their model is not known.

`base_url` overrides the host part for tests (e.g. the yandex profile pointed at a local server).
The auth header value is built from a `Secret` only at connect time and never logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from gateway.media.format import PCM16_24K, PCMA_8K, PCMU_8K, AudioFormat
from gateway.secret import Secret

__all__ = ["DEFAULT_MODEL", "ProviderProfile", "choose_session_format", "make_profile"]

DEFAULT_MODEL = "gpt-realtime"
YANDEX_MODEL = "speech-realtime-250923"
OPENAI_URL = "wss://api.openai.com/v1/realtime"
YANDEX_URL = "wss://ai.api.cloud.yandex.net/v1/realtime"
#: OpenAI's input transcription model (`audio.input.transcription.model`)
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


@dataclass(frozen=True)
class ProviderProfile:
    """Everything the client needs to know about one provider."""

    name: str
    url: str
    auth_scheme: str = "Bearer"
    credential: Secret = field(default_factory=lambda: Secret(""))
    model: str = DEFAULT_MODEL
    default_voice: str = "marin"
    #: formats the provider accepts for input; None = any GA format
    input_formats: frozenset[AudioFormat] | None = None
    #: client event types the provider does not support (never sent there)
    unsupported_events: frozenset[str] = frozenset()
    #: whether session.update carries `session.type = "realtime"`
    session_type: bool = True
    #: PCM16 only (no G.711): the bridge transcodes
    pcm_only: bool = False
    #: input transcription model turned on when sessions are re-opened (the re-seed needs the
    #: caller's words); "" where the provider's is not known
    transcription_model: str = ""

    def headers(self) -> dict[str, str]:
        """Headers for the WebSocket upgrade. Contains the credential: never log the result."""
        if not self.credential:
            return {}
        return {"Authorization": f"{self.auth_scheme} {self.credential.reveal()}"}

    @property
    def display_url(self) -> str:
        """The URL without its query, safe to log."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def supports(self, event_type: str) -> bool:
        return event_type not in self.unsupported_events

    def with_model(self, model: str, credential: Secret | None = None) -> ProviderProfile:
        """This profile for another `model` (the URL's `model` query parameter) and, when given,
        another credential."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        return dataclasses.replace(
            self,
            url=_with_model(base.rstrip("?"), model),
            model=model,
            credential=self.credential if credential is None else credential,
        )


def _with_model(base: str, model: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}model={quote(model, safe='/:')}"


def _base(base_url: str, default: str) -> str:
    """`base_url` may be a full ws URL ending in /realtime or just ws://host:port[/v1]."""
    if not base_url:
        return default
    base = base_url.rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    if not base.endswith("/realtime"):
        if not base.endswith("/v1"):
            base += "/v1"
        base += "/realtime"
    return base


def make_profile(
    provider: str,
    *,
    model: str = "",
    base_url: str = "",
    token: Secret | None = None,
    openai_api_key: Secret | None = None,
    yandex_folder_id: str = "",
    yandex_api_key: Secret | None = None,
    yandex_iam_token: Secret | None = None,
) -> ProviderProfile:
    """Build the profile for `provider` (openai|yandex|url|local). ValueError if incomplete."""
    if provider == "openai":
        m = model or DEFAULT_MODEL
        return ProviderProfile(
            "openai",
            _with_model(_base(base_url, OPENAI_URL), m),
            credential=openai_api_key or Secret(""),
            model=m,
            transcription_model=TRANSCRIPTION_MODEL,
        )
    if provider == "yandex":
        if not yandex_folder_id:
            raise ValueError("yandex provider needs yandex_folder_id")
        m = model or f"gpt://{yandex_folder_id}/{YANDEX_MODEL}"
        if yandex_api_key:
            scheme, cred = "Api-Key", yandex_api_key
        elif yandex_iam_token:
            scheme, cred = "Bearer", yandex_iam_token
        else:
            raise ValueError("yandex provider needs yandex_api_key or yandex_iam_token")
        return ProviderProfile(
            "yandex",
            _with_model(_base(base_url, YANDEX_URL), m),
            auth_scheme=scheme,
            credential=cred,
            model=m,
            default_voice="marina",
            input_formats=frozenset({PCM16_24K}),
            unsupported_events=frozenset(
                {
                    "input_audio_buffer.clear",
                    "output_audio_buffer.clear",
                }
            ),
            session_type=False,
            pcm_only=True,
        )
    if provider in ("url", "local"):
        if not base_url:
            raise ValueError(f"{provider} provider needs a URL")
        parts = urlsplit(base_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"{provider} provider URL must be ws:// or wss://")
        path = (
            _base(parts.path or "/", "")
            if not parts.path.rstrip("/").endswith("/realtime")
            else parts.path
        )
        m = model or DEFAULT_MODEL
        query = parts.query
        if "model=" not in query:
            query = f"{query}&model={quote(m, safe='/:')}" if query else f"model={quote(m)}"
        return ProviderProfile(
            provider,
            urlunsplit((scheme, parts.netloc, path, query, "")),
            credential=token or Secret(""),
            model=m,
            transcription_model=TRANSCRIPTION_MODEL if provider == "local" else "",
        )
    raise ValueError(f"unknown provider {provider!r}")


_CODEC_FORMATS: Mapping[str, AudioFormat] = {"pcmu": PCMU_8K, "pcma": PCMA_8K}


def choose_session_format(
    profile: ProviderProfile, session_format: str, call_codec: str = "pcmu"
) -> AudioFormat:
    """The format to ask for. `auto`: the call's G.711 codec (no transcoding) except on PCM-only
    providers (yandex), which get PCM16 24 kHz. `pcmu|pcma|pcm24k` force it."""
    if session_format == "auto":
        if profile.pcm_only:
            return PCM16_24K
        return _CODEC_FORMATS.get(call_codec, PCM16_24K)
    fmt = {"pcmu": PCMU_8K, "pcma": PCMA_8K, "pcm24k": PCM16_24K}.get(session_format)
    if fmt is None:
        raise ValueError(f"session_format {session_format!r} is not auto|pcmu|pcma|pcm24k")
    if profile.input_formats is not None and fmt not in profile.input_formats:
        return PCM16_24K
    return fmt
