//! On-disk md superblocks and bitmaps.
