"""The MASSIVE 1.1 facts every other module imports: locales, intent and scenario label orders, ISO 639-3 and 639-1 codes.

Label orders are the hub's ClassLabel orders, so project checkpoints line up with public ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from merginguriel.errors import InputError, close_matches

# 52 locales: the 51 of MASSIVE 1.0 plus ca-ES, added in 1.1.
LOCALES: tuple[str, ...] = (
    "af-ZA", "am-ET", "ar-SA", "az-AZ", "bn-BD", "ca-ES", "cy-GB", "da-DK", "de-DE", "el-GR", "en-US", "es-ES", "fa-IR",
    "fi-FI", "fr-FR", "he-IL", "hi-IN", "hu-HU", "hy-AM", "id-ID", "is-IS", "it-IT", "ja-JP", "jv-ID", "ka-GE", "km-KH",
    "kn-IN", "ko-KR", "lv-LV", "ml-IN", "mn-MN", "ms-MY", "my-MM", "nb-NO", "nl-NL", "pl-PL", "pt-PT", "ro-RO", "ru-RU",
    "sl-SL", "sq-AL", "sv-SE", "sw-KE", "ta-IN", "te-IN", "th-TH", "tl-PH", "tr-TR", "ur-PK", "vi-VN", "zh-CN", "zh-TW",
)

INTENTS: tuple[str, ...] = (
    "datetime_query", "iot_hue_lightchange", "transport_ticket", "takeaway_query", "qa_stock", "general_greet",
    "recommendation_events", "music_dislikeness", "iot_wemo_off", "cooking_recipe", "qa_currency", "transport_traffic",
    "general_quirky", "weather_query", "audio_volume_up", "email_addcontact", "takeaway_order", "email_querycontact",
    "iot_hue_lightup", "recommendation_locations", "play_audiobook", "lists_createoradd", "news_query", "alarm_query",
    "iot_wemo_on", "general_joke", "qa_definition", "social_query", "music_settings", "audio_volume_other",
    "calendar_remove", "iot_hue_lightdim", "calendar_query", "email_sendemail", "iot_cleaning", "audio_volume_down",
    "play_radio", "cooking_query", "datetime_convert", "qa_maths", "iot_hue_lightoff", "iot_hue_lighton",
    "transport_query", "music_likeness", "email_query", "play_music", "audio_volume_mute", "social_post", "alarm_set",
    "qa_factoid", "calendar_set", "play_game", "alarm_remove", "lists_remove", "transport_taxi", "recommendation_movies",
    "iot_coffee", "music_query", "play_podcasts", "lists_query",
)

SCENARIOS: tuple[str, ...] = (
    "social", "transport", "calendar", "play", "news", "datetime", "recommendation", "email", "iot", "general", "audio",
    "lists", "qa", "cooking", "takeaway", "music", "alarm", "weather",
)

NUM_INTENTS = len(INTENTS)
INTENT_TO_ID: dict[str, int] = {name: i for i, name in enumerate(INTENTS)}
ID2LABEL: dict[int, str] = dict(enumerate(INTENTS))
LABEL2ID: dict[str, int] = dict(INTENT_TO_ID)

# Codes that both lang2vec and urielplus hold (azj and lvs lack syntactic data in urielplus, so the macro codes are used).
# zh-CN and zh-TW share one code: URIEL cannot tell them apart, only REAL similarity can.
ISO639_3: dict[str, str] = {
    "af-ZA": "afr", "am-ET": "amh", "ar-SA": "arb", "az-AZ": "aze", "bn-BD": "ben", "ca-ES": "cat", "cy-GB": "cym",
    "da-DK": "dan", "de-DE": "deu", "el-GR": "ell", "en-US": "eng", "es-ES": "spa", "fa-IR": "pes", "fi-FI": "fin",
    "fr-FR": "fra", "he-IL": "heb", "hi-IN": "hin", "hu-HU": "hun", "hy-AM": "hye", "id-ID": "ind", "is-IS": "isl",
    "it-IT": "ita", "ja-JP": "jpn", "jv-ID": "jav", "ka-GE": "kat", "km-KH": "khm", "kn-IN": "kan", "ko-KR": "kor",
    "lv-LV": "lav", "ml-IN": "mal", "mn-MN": "khk", "ms-MY": "zsm", "my-MM": "mya", "nb-NO": "nob", "nl-NL": "nld",
    "pl-PL": "pol", "pt-PT": "por", "ro-RO": "ron", "ru-RU": "rus", "sl-SL": "slv", "sq-AL": "als", "sv-SE": "swe",
    "sw-KE": "swh", "ta-IN": "tam", "te-IN": "tel", "th-TH": "tha", "tl-PH": "tgl", "tr-TR": "tur", "ur-PK": "urd",
    "vi-VN": "vie", "zh-CN": "cmn", "zh-TW": "cmn",
}
# Macrolanguage codes, for look-ups where a library holds only the macro code.
ISO639_3_MACRO: dict[str, str] = {
    "ar-SA": "ara", "az-AZ": "aze", "fa-IR": "fas", "lv-LV": "lav", "mn-MN": "mon", "ms-MY": "msa", "nb-NO": "nor",
    "sq-AL": "sqi", "sw-KE": "swa", "zh-CN": "zho", "zh-TW": "zho",
}

# ISO 639-1 codes, as Hugging Face model cards list languages: every MASSIVE locale code starts with its language's
# two-letter code (zh-CN and zh-TW are both zh).
ISO639_1: dict[str, str] = {loc: loc.split("-")[0] for loc in LOCALES}

# Dataset splits as the hub names them, and the partition names of the official jsonl release.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
RELEASE_PARTITION_TO_SPLIT: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}


class UnknownLocaleError(InputError):
    """A locale that is not one of the 51 MASSIVE locales."""


class Locale(str):
    """A locale code that :func:`check_locale` accepted. Code handed one need not check it again (:func:`as_locale`),
    so a merge job checks each of its locales once, where it starts, and the data and similarity layers below it use
    them as they are."""

    __slots__ = ()

    def __reduce__(self):
        return str, (str(self),)  # pickled as the plain string: a reader in another process checks it again


def _yaml_as_str() -> None:
    """YAML (configs, recipes) writes a Locale as the plain string it is."""
    import yaml

    for dumper in (yaml.SafeDumper, yaml.Dumper):
        dumper.add_representer(Locale, lambda d, value: d.represent_str(str(value)))


_yaml_as_str()


def check_locale(locale: str) -> Locale:
    """``locale`` as a checked :class:`Locale` if it is a MASSIVE locale, else an error that lists the valid ones."""
    if locale not in ISO639_3:
        close = _close(locale)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnknownLocaleError(f"unknown locale {locale!r}.{hint} Valid MASSIVE locales ({len(LOCALES)}): {' '.join(LOCALES)}")
    return Locale(locale)


def _close(locale: str) -> list[str]:
    """The locales a mistyped one may mean: close spellings (``tr_TR``: tr-TR), else the same language's (``de``: de-DE)."""
    language = str(locale).replace("_", "-").split("-")[0].lower()
    return close_matches(locale, LOCALES) or [loc for loc in LOCALES if loc.split("-")[0] == language]


def as_locale(locale: str) -> Locale:
    """``locale`` checked: as it is when it is a :class:`Locale` already, else through :func:`check_locale`."""
    return locale if isinstance(locale, Locale) else check_locale(locale)


def check_locales(locales: Iterable[str]) -> list[Locale]:
    """Validate several locales at once (all unknown ones named in one error) and reject duplicates."""
    locales = list(locales)
    unknown = [loc for loc in locales if loc not in ISO639_3]
    if unknown:
        named = [f"{loc!r} (did you mean {' or '.join(_close(loc))}?)" if _close(loc) else repr(loc) for loc in unknown]
        raise UnknownLocaleError(
            f"unknown locale(s) {', '.join(named)}. Valid MASSIVE locales ({len(LOCALES)}): {' '.join(LOCALES)}"
        )
    dupes = sorted({loc for loc in locales if locales.count(loc) > 1})
    if dupes:
        raise InputError(f"locale(s) listed more than once: {', '.join(dupes)}; list each locale once")
    return [as_locale(loc) for loc in locales]


def iso639_3(locale: str) -> str:
    """The ISO 639-3 code used for URIEL look-ups of a MASSIVE locale."""
    return ISO639_3[as_locale(locale)]


def iso639_1(locale: str) -> str:
    """The ISO 639-1 code of a MASSIVE locale's language (model cards list languages so)."""
    return ISO639_1[as_locale(locale)]
