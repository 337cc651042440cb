//! A small reader for the kernel's BTF (BPF Type Format), enough to find struct member offsets and
//! function parameters in a module's split BTF (`/sys/kernel/btf/md_mod` on top of
//! `/sys/kernel/btf/vmlinux`).
//!
//! aya cannot use module BTF (aya issue #300), and md's `struct bitmap` is private to
//! md-bitmap.c, so md-bitmap reads the offsets it needs itself: to read the kernel's own bitmap
//! counters (an oracle independent of the engine) and to tell function prototypes apart.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

const MAGIC: u16 = 0xeb9f;

/// BTF kinds used here.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// One BTF type, decoded as far as md-bitmap needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// An integer of `size` bytes.
    Int {
        /// Name.
        name: String,
        /// Bytes.
        size: u32,
    },
    /// A pointer.
    Ptr(u32),
    /// An array of `nelems` elements of type `elem`.
    Array {
        /// Element type.
        elem: u32,
        /// Element count.
        nelems: u32,
    },
    /// A struct or union.
    Struct {
        /// Name ("" if anonymous).
        name: String,
        /// Size in bytes.
        size: u32,
        /// Members.
        members: Vec<Member>,
        /// Whether it is a union.
        union: bool,
    },
    /// Typedef, const, volatile, restrict, type tag: a name for another type.
    Alias {
        /// Name (typedefs only).
        name: String,
        /// The aliased type.
        target: u32,
    },
    /// A function.
    Func {
        /// Name.
        name: String,
        /// Its FUNC_PROTO.
        proto: u32,
    },
    /// A function prototype.
    FuncProto {
        /// Return type.
        ret: u32,
        /// Parameters (name, type).
        params: Vec<(String, u32)>,
    },
    /// An enum of `size` bytes.
    Enum {
        /// Name.
        name: String,
        /// Bytes.
        size: u32,
    },
    /// Anything else (forward declarations, variables, sections, floats, tags).
    Other {
        /// Name.
        name: String,
    },
}

/// A struct or union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name ("" for an anonymous struct/union member).
    pub name: String,
    /// Type id.
    pub ty: u32,
    /// Offset from the start of the containing struct, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits, 0 if not a bitfield.
    pub bitfield_size: u32,
}

/// Types of vmlinux plus one module, with ids as the kernel numbers them.
#[derive(Debug, Default)]
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

struct Raw<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(o..o + 2).context("BTF truncated")?.try_into()?,
    ))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(o..o + 4).context("BTF truncated")?.try_into()?,
    ))
}

fn split(data: &[u8]) -> Result<Raw<'_>> {
    if u16_at(data, 0)? != MAGIC {
        bail!("not BTF (bad magic)");
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let body = data.get(hdr_len..).context("BTF truncated")?;
    Ok(Raw {
        types: body
            .get(type_off..type_off + type_len)
            .context("BTF type section out of range")?,
        strings: body
            .get(str_off..str_off + str_len)
            .context("BTF string section out of range")?,
    })
}

impl Btf {
    /// Reads `/sys/kernel/btf/vmlinux` and `/sys/kernel/btf/<module>`.
    pub fn load_module(module: &str) -> Result<Self> {
        let base = Path::new("/sys/kernel/btf/vmlinux");
        let m = Path::new("/sys/kernel/btf").join(module);
        let base = std::fs::read(base)
            .with_context(|| format!("cannot read {} (kernel without BTF?)", base.display()))?;
        let m = std::fs::read(&m).with_context(|| {
            format!(
                "cannot read {} (module not loaded, or kernel without CONFIG_DEBUG_INFO_BTF_MODULES)",
                m.display()
            )
        })?;
        Self::parse_split(&base, Some(&m))
    }

    /// Reads `/sys/kernel/btf/vmlinux` alone.
    pub fn load_vmlinux() -> Result<Self> {
        let base = Path::new("/sys/kernel/btf/vmlinux");
        let base = std::fs::read(base)
            .with_context(|| format!("cannot read {} (kernel without BTF?)", base.display()))?;
        Self::parse_split(&base, None)
    }

    /// Parses a base BTF and, optionally, a split BTF on top of it.
    pub fn parse_split(base: &[u8], module: Option<&[u8]>) -> Result<Self> {
        let base_raw = split(base)?;
        let mut btf = Btf {
            types: vec![Type::Other {
                name: String::new(),
            }],
            by_name: HashMap::new(),
        };
        btf.add_types(&base_raw, &[base_raw.strings])?;
        if let Some(m) = module {
            let m_raw = split(m)?;
            btf.add_types(&m_raw, &[base_raw.strings, m_raw.strings])?;
        }
        for (id, t) in btf.types.iter().enumerate() {
            let name = match t {
                Type::Struct { name, .. }
                | Type::Func { name, .. }
                | Type::Int { name, .. }
                | Type::Enum { name, .. }
                | Type::Alias { name, .. } => name,
                _ => continue,
            };
            if !name.is_empty() {
                btf.by_name.entry(name.clone()).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn add_types(&mut self, raw: &Raw<'_>, strings: &[&[u8]]) -> Result<()> {
        // Split BTF string offsets continue after the base's string section.
        let s = |off: u32| -> Result<String> {
            let mut off = off as usize;
            for sec in strings {
                if off < sec.len() {
                    let end = sec[off..]
                        .iter()
                        .position(|b| *b == 0)
                        .context("unterminated BTF string")?;
                    return Ok(String::from_utf8_lossy(&sec[off..off + end]).into_owned());
                }
                off -= sec.len();
            }
            bail!("BTF string offset out of range")
        };
        let b = raw.types;
        let mut o = 0usize;
        while o < b.len() {
            let name_off = u32_at(b, o)?;
            let info = u32_at(b, o + 4)?;
            let size_type = u32_at(b, o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let k = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let t = match k {
                kind::INT => {
                    o += 4;
                    Type::Int {
                        name: s(name_off)?,
                        size: size_type,
                    }
                }
                kind::PTR => Type::Ptr(size_type),
                kind::ARRAY => {
                    let elem = u32_at(b, o)?;
                    let nelems = u32_at(b, o + 8)?;
                    o += 12;
                    Type::Array { elem, nelems }
                }
                kind::STRUCT | kind::UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let mname = u32_at(b, o)?;
                        let ty = u32_at(b, o + 4)?;
                        let off = u32_at(b, o + 8)?;
                        o += 12;
                        let (bit_offset, bitfield_size) = if kflag {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        members.push(Member {
                            name: s(mname)?,
                            ty,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    Type::Struct {
                        name: s(name_off)?,
                        size: size_type,
                        members,
                        union: k == kind::UNION,
                    }
                }
                kind::ENUM => {
                    o += 8 * vlen;
                    Type::Enum {
                        name: s(name_off)?,
                        size: size_type,
                    }
                }
                kind::ENUM64 => {
                    o += 12 * vlen;
                    Type::Enum {
                        name: s(name_off)?,
                        size: size_type,
                    }
                }
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    Type::Alias {
                        name: if k == kind::TYPEDEF {
                            s(name_off)?
                        } else {
                            String::new()
                        },
                        target: size_type,
                    }
                }
                kind::FUNC => Type::Func {
                    name: s(name_off)?,
                    proto: size_type,
                },
                kind::FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        params.push((s(u32_at(b, o)?)?, u32_at(b, o + 4)?));
                        o += 8;
                    }
                    Type::FuncProto {
                        ret: size_type,
                        params,
                    }
                }
                kind::VAR | kind::DECL_TAG => {
                    o += 4;
                    Type::Other { name: s(name_off)? }
                }
                kind::DATASEC => {
                    o += 12 * vlen;
                    Type::Other { name: s(name_off)? }
                }
                kind::FWD | kind::FLOAT => Type::Other { name: s(name_off)? },
                other => bail!("unknown BTF kind {other}"),
            };
            self.types.push(t);
        }
        Ok(())
    }

    /// The type with this id.
    pub fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(Type::Alias { target, .. }) => id = *target,
                _ => break,
            }
        }
        id
    }

    /// The id of the (last defined, i.e. the module's own if both have one) struct named `name`
    /// that has members.
    pub fn find_struct(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().rev().copied().find(
            |id| matches!(self.ty(*id), Some(Type::Struct { members, .. }) if !members.is_empty()),
        )
    }

    /// Size in bytes of a type (pointers are 8 bytes).
    pub fn size_of(&self, id: u32) -> Option<u32> {
        match self.ty(self.resolve(id))? {
            Type::Int { size, .. } | Type::Enum { size, .. } | Type::Struct { size, .. } => {
                Some(*size)
            }
            Type::Ptr(_) => Some(8),
            Type::Array { elem, nelems } => Some(self.size_of(*elem)? * nelems),
            _ => None,
        }
    }

    /// Finds a member by name in struct `id`, looking into anonymous struct/union members; returns
    /// it with its bit offset from the start of `id`.
    pub fn member(&self, id: u32, name: &str) -> Option<Member> {
        let Type::Struct { members, .. } = self.ty(self.resolve(id))? else {
            return None;
        };
        for m in members {
            if m.name == name {
                return Some(m.clone());
            }
            if m.name.is_empty()
                && let Some(mut inner) = self.member(m.ty, name)
            {
                inner.bit_offset += m.bit_offset;
                return Some(inner);
            }
        }
        None
    }

    /// Byte offset of a dotted member path (`"counts.bp"`) in struct `struct_name`, with the type
    /// id of the last member.
    pub fn offset_of(&self, struct_name: &str, path: &str) -> Result<(u32, u32)> {
        let mut id = self
            .find_struct(struct_name)
            .with_context(|| format!("BTF has no struct {struct_name}"))?;
        let mut bits = 0;
        for part in path.split('.') {
            let m = self
                .member(id, part)
                .with_context(|| format!("BTF: struct {struct_name} has no member {path}"))?;
            bits += m.bit_offset;
            id = m.ty;
        }
        if bits % 8 != 0 {
            bail!("BTF: {struct_name}.{path} is a bitfield");
        }
        Ok((bits / 8, id))
    }

    /// Parameter names of function `name`, if BTF describes it.
    pub fn func_params(&self, name: &str) -> Option<Vec<String>> {
        let id = *self
            .by_name
            .get(name)?
            .iter()
            .rev()
            .find(|id| matches!(self.ty(**id), Some(Type::Func { .. })))?;
        let Some(Type::Func { proto, .. }) = self.ty(id) else {
            return None;
        };
        let Some(Type::FuncProto { params, .. }) = self.ty(*proto) else {
            return None;
        };
        Some(params.iter().map(|(n, _)| n.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tb: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((tb.len() as u32).to_le_bytes());
        out.extend((tb.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(tb);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_members_across_split_btf_with_bitfields() {
        // base: [1] int "int" size 4, [2] ptr -> 1
        let base_str = b"\0int\0";
        let base = blob(
            &[
                1,
                (kind::INT << 24),
                4,
                32, //
                0,
                (kind::PTR << 24),
                1,
            ],
            base_str,
        );
        // module strings start at base_str.len() = 5
        let mstr = b"bitmap_page\0map\0flags\0count\0";
        let o = |s: &str| -> u32 {
            // Whole strings only: "map" must not match inside "bitmap_page".
            let mut pos = 0;
            for part in mstr.split(|b| *b == 0) {
                if part == s.as_bytes() {
                    break;
                }
                pos += part.len() + 1;
            }
            (base_str.len() + pos) as u32
        };
        // [3] struct bitmap_page { char *map (ptr, id 2) at 0; u32 pending:1 at bit 65 (bitfield) }
        let module = blob(
            &[
                o("bitmap_page"),
                (kind::STRUCT << 24) | (1 << 31) | 2,
                16,
                o("map"),
                2,
                0,
                o("count"),
                1,
                (30 << 24) | 66,
            ],
            mstr,
        );
        let btf = Btf::parse_split(&base, Some(&module)).unwrap();
        let id = btf.find_struct("bitmap_page").unwrap();
        assert_eq!(id, 3);
        assert_eq!(btf.offset_of("bitmap_page", "map").unwrap().0, 0);
        let c = btf.member(id, "count").unwrap();
        assert_eq!((c.bit_offset, c.bitfield_size), (66, 30));
        assert!(btf.offset_of("bitmap_page", "count").is_err());
        assert_eq!(btf.size_of(id), Some(16));
    }
}
