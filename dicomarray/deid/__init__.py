"""De-identification: PS3.15 Annex E's Basic Application Level Confidentiality Profile
(Table E.1-1, :data:`profile.EDITION`) with its options, and keyed pseudonyms.

- :mod:`.profile`: the table and the action for each attribute under the options;
- :mod:`.keys`: the secret (given, a file, ``DICOMARRAY_DEID_KEY``, or generated);
- :mod:`.pseudonyms`: HMAC-SHA256 pseudonyms of IDs, UIDs (``2.25.<int>``), folder names,
  and the per-patient date shift;
- :mod:`.values`: dummy values, shifted dates, the identifier check of descriptors;
- :mod:`.dataset`: the profile applied to a pydicom Dataset;
- :mod:`.deidentifier`: :class:`Deidentifier`, what callers pass as ``deidentify=``.
"""

from .deidentifier import Deidentifier, as_deidentifier
from .keys import KEY_ENV
from .profile import EDITION, ProfileOptions

__all__ = ["EDITION", "KEY_ENV", "Deidentifier", "ProfileOptions", "as_deidentifier"]
