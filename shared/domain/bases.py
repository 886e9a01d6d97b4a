"""What the three-way merge remembers of the last sync, per field (or unit of fields).

A link keeps, for each unit of CRM columns, the fingerprints of the values both sides agreed on at
the last sync: the base the merge compares each side's current value with. Fingerprints only
(never values), so a link row holds no content.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldBase:
    """Fingerprints of one unit's values on each side as of the last sync."""

    outlook: str
    crm: str
