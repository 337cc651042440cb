//! md arrays to create in the guest, one call each: `ArraySpec::new(5, 4).bitmap_chunk_kib(1024)`
//! renders the `mdadm --create` line and the waits around it.
use serde::{Deserialize, Serialize};

/// An md array with an internal bitmap, as `mdadm --create` makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    /// Device name (`md0`).
    pub name: String,
    /// RAID level: 1, 4, 5, 6 or 10.
    pub level: u32,
    /// Number of member devices.
    pub disks: usize,
    /// Metadata version: "0.90", "1.0", "1.1" or "1.2".
    pub metadata: String,
    /// Bitmap chunk size in KiB (`--bitmap-chunk`); `None` lets mdadm choose.
    pub bitmap_chunk_kib: Option<u64>,
    /// RAID chunk size in KiB (`--chunk`, levels 0/4/5/6/10).
    pub chunk_kib: Option<u64>,
    /// Layout (`--layout`, e.g. `n2`, `f2`, `o2`, `left-symmetric`).
    pub layout: Option<String>,
    /// Skip the initial resync (`--assume-clean`).
    pub assume_clean: bool,
    /// Size used on each member in KiB (`--size`); `None` uses the whole device.
    pub size_kib: Option<u64>,
    /// Members that are write-mostly (indices into the member list; raid1 only).
    pub write_mostly: Vec<usize>,
    /// `--write-behind` (raid1 with write-mostly members).
    pub write_behind: Option<u32>,
    /// Bitmap daemon sleep in seconds (`--delay`).
    pub delay_secs: Option<u32>,
    /// Wait for the initial resync to finish.
    pub wait_sync: bool,
}

impl ArraySpec {
    /// A level-`level` array named md0 over `disks` members: metadata 1.2, internal bitmap with a
    /// 64 KiB chunk, `--assume-clean`.
    pub fn new(level: u32, disks: usize) -> Self {
        Self {
            name: "md0".into(),
            level,
            disks,
            metadata: "1.2".into(),
            bitmap_chunk_kib: Some(64),
            chunk_kib: None,
            layout: None,
            assume_clean: true,
            size_kib: None,
            write_mostly: Vec::new(),
            write_behind: None,
            delay_secs: None,
            wait_sync: false,
        }
    }

    /// Sets the name.
    pub fn name(mut self, n: &str) -> Self {
        self.name = n.into();
        self
    }
    /// Sets the metadata version.
    pub fn metadata(mut self, m: &str) -> Self {
        self.metadata = m.into();
        self
    }
    /// Sets the bitmap chunk in KiB.
    pub fn bitmap_chunk_kib(mut self, k: u64) -> Self {
        self.bitmap_chunk_kib = Some(k);
        self
    }
    /// Sets the RAID chunk in KiB.
    pub fn chunk_kib(mut self, k: u64) -> Self {
        self.chunk_kib = Some(k);
        self
    }
    /// Sets the layout.
    pub fn layout(mut self, l: &str) -> Self {
        self.layout = Some(l.into());
        self
    }
    /// Sets `--assume-clean`.
    pub fn assume_clean(mut self, yes: bool) -> Self {
        self.assume_clean = yes;
        self
    }
    /// Sets the per-member size in KiB.
    pub fn size_kib(mut self, k: u64) -> Self {
        self.size_kib = Some(k);
        self
    }
    /// Sets the bitmap daemon sleep.
    pub fn delay_secs(mut self, s: u32) -> Self {
        self.delay_secs = Some(s);
        self
    }
    /// Waits for the initial resync.
    pub fn wait_sync(mut self, yes: bool) -> Self {
        self.wait_sync = yes;
        self
    }
    /// Makes members write-mostly with a write-behind limit.
    pub fn write_behind(mut self, members: &[usize], max: u32) -> Self {
        self.write_mostly = members.to_vec();
        self.write_behind = Some(max);
        self
    }

    /// The shell lines that create the array on `members` (device paths) and wait for it.
    pub fn create_script(&self, members: &[String]) -> String {
        assert_eq!(
            members.len(),
            self.disks,
            "array {} needs {} members",
            self.name,
            self.disks
        );
        let mut c = format!(
            "mdadm --create /dev/{} --run --quiet --level={} --raid-devices={} --metadata={} --bitmap=internal",
            self.name, self.level, self.disks, self.metadata
        );
        if let Some(k) = self.bitmap_chunk_kib {
            c += &format!(" --bitmap-chunk={k}");
        }
        if let Some(k) = self.chunk_kib {
            c += &format!(" --chunk={k}");
        }
        if let Some(l) = &self.layout {
            c += &format!(" --layout={l}");
        }
        if self.assume_clean {
            c += " --assume-clean";
        }
        if let Some(k) = self.size_kib {
            c += &format!(" --size={k}");
        }
        if let Some(d) = self.delay_secs {
            c += &format!(" --delay={d}");
        }
        if let Some(w) = self.write_behind {
            c += &format!(" --write-behind={w}");
        }
        for (i, m) in members.iter().enumerate() {
            if self.write_mostly.contains(&i) {
                c += " --write-mostly";
            }
            c += &format!(" {m}");
        }
        let mut s = format!(
            "yes | {c} || {{ echo 'mdadm --create {} failed'; exit 90; }}\n",
            self.name
        );
        s += &format!("while [ ! -b /dev/{} ]; do sleep 0.1; done\n", self.name);
        if self.wait_sync {
            s += &format!("mdadm --wait /dev/{} >/dev/null 2>&1; true\n", self.name);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_raid5_create() {
        let s = ArraySpec::new(5, 3)
            .chunk_kib(64)
            .layout("left-symmetric")
            .bitmap_chunk_kib(1024)
            .create_script(&["/dev/vda".into(), "/dev/vdb".into(), "/dev/vdc".into()]);
        assert!(s.contains("--level=5 --raid-devices=3 --metadata=1.2 --bitmap=internal --bitmap-chunk=1024 --chunk=64 --layout=left-symmetric --assume-clean /dev/vda /dev/vdb /dev/vdc"), "{s}");
    }

    #[test]
    fn write_mostly_goes_before_its_member() {
        let s = ArraySpec::new(1, 2)
            .write_behind(&[1], 256)
            .create_script(&["/dev/vda".into(), "/dev/vdb".into()]);
        assert!(
            s.contains("--write-behind=256 /dev/vda --write-mostly /dev/vdb"),
            "{s}"
        );
    }
}
