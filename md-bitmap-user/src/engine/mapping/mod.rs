//! Mapping from array writes to bitmap chunk ranges, per personality.
