//! `md-bitmap inspect`: the on-disk bitmap of members, as `mdadm -X` prints it and more.
