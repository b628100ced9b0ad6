"""cloverctl: the Clover command line (``<verb> <noun>``, like kubectl)."""
