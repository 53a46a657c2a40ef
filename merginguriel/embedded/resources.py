"""How much text XLM-R saw of each language: the CC-100 sizes published with XLM-R.

Source: Conneau et al. 2020, "Unsupervised Cross-lingual Representation Learning at Scale" (ACL), Appendix A, Table 6
("Languages and statistics of the CC-100 corpus"), column "Size (GiB)" (uncompressed), as transcribed in
github.com/mayhewsw/multilingual-data-stats, file cc-100/cc-100.csv. Checked against that file on 2026-11-30.

Table 6 lists Burmese twice (Unicode 0.4 GiB and Zawgyi-encoded 1.6 GiB); both are Burmese text that XLM-R saw, so
my-MM sums them. Chinese has separate rows for Simplified (zh-CN) and Traditional (zh-TW) script. Norwegian (``no``)
stands for nb-NO. In the synthetic world the resource level decides how well a language is aligned with the shared
meaning space (low-resource languages are noisier, as XLM-R's are: Conneau et al. section 5, "curse of
multilinguality"), not how much data the task has: every locale gets the same number of MASSIVE rows.
"""

from __future__ import annotations

import math

from merginguriel.locales import LOCALES

CC100_SOURCE = (
    "Conneau et al. 2020 (XLM-R), Appendix A Table 6, Size (GiB); transcription: "
    "github.com/mayhewsw/multilingual-data-stats cc-100/cc-100.csv"
)

CC100_GIB: dict[str, float] = {
    "af-ZA": 1.3, "am-ET": 0.8, "ar-SA": 28.0, "az-AZ": 6.5, "bn-BD": 8.4, "ca-ES": 10.1, "cy-GB": 0.8, "da-DK": 45.6,
    "de-DE": 66.6, "el-GR": 46.9, "en-US": 300.8, "es-ES": 53.3, "fa-IR": 111.6, "fi-FI": 54.3, "fr-FR": 56.8,
    "he-IL": 31.6, "hi-IN": 20.2, "hu-HU": 58.4, "hy-AM": 5.5, "id-ID": 148.3, "is-IS": 3.2, "it-IT": 30.2,
    "ja-JP": 69.3, "jv-ID": 0.2, "ka-GE": 9.1, "km-KH": 1.5, "kn-IN": 3.3, "ko-KR": 54.2, "lv-LV": 8.8, "ml-IN": 7.6,
    "mn-MN": 3.0, "ms-MY": 8.5, "my-MM": 0.4 + 1.6, "nb-NO": 49.0, "nl-NL": 29.3, "pl-PL": 44.6, "pt-PT": 49.1,
    "ro-RO": 61.4, "ru-RU": 278.0, "sl-SL": 10.3, "sq-AL": 5.4, "sv-SE": 85.0, "sw-KE": 1.6, "ta-IN": 12.2,
    "te-IN": 4.7, "th-TH": 71.7, "tl-PH": 3.1, "tr-TR": 20.9, "ur-PK": 5.7, "vi-VN": 137.3, "zh-CN": 46.9,
    "zh-TW": 16.6,
}
assert set(CC100_GIB) == set(LOCALES)


def resource_level(locale: str) -> float:
    """log10 of the locale's CC-100 GiB mapped linearly onto [0, 1] over the 52 locales (jv-ID 0, en-US 1)."""
    lo, hi = (math.log10(f(CC100_GIB.values())) for f in (min, max))
    return (math.log10(CC100_GIB[locale]) - lo) / (hi - lo)
