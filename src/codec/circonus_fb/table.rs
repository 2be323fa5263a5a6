//! Bounds-checked access to a verified buffer. The crate's own accessors
//! (`Table::get`, `Follow`) are `unsafe` and so unavailable here; these
//! check every read, so a gap in verification yields a missing field,
//! never a panic.

/// A little-endian scalar read from a byte offset; `None` past the end.
pub(super) trait Scalar: Sized {
    /// Reads `Self` at `pos`, or `None` when it does not fit in `buf`.
    fn read(buf: &[u8], pos: usize) -> Option<Self>;
}

macro_rules! impl_scalar {
    ($($ty:ty),*) => {$(
        impl Scalar for $ty {
            fn read(buf: &[u8], pos: usize) -> Option<Self> {
                let end = pos.checked_add(std::mem::size_of::<$ty>())?;
                Some(<$ty>::from_le_bytes(buf.get(pos..end)?.try_into().ok()?))
            }
        }
    )*};
}

impl_scalar!(u8, i8, u16, i32, u32, i64, u64, f64);

fn read_offset(buf: &[u8], pos: usize) -> Option<usize> {
    pos.checked_add(usize::try_from(u32::read(buf, pos)?).ok()?)
}

fn read_str(buf: &[u8], pos: usize) -> Option<&str> {
    let vector = VectorRef::at(buf, pos)?;
    std::str::from_utf8(vector.bytes(1)?).ok()
}

/// A table in a verified buffer.
#[derive(Clone, Copy)]
pub(super) struct TableRef<'b> {
    buf: &'b [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'b> TableRef<'b> {
    pub(super) fn at(buf: &'b [u8], pos: usize) -> Option<Self> {
        let soffset = i32::read(buf, pos)?;
        // The vtable sits at `pos - soffset`.
        let distance = usize::try_from(soffset.unsigned_abs()).ok()?;
        let vtable = if soffset >= 0 {
            pos.checked_sub(distance)?
        } else {
            pos.checked_add(distance)?
        };
        let vtable_len = usize::from(u16::read(buf, vtable)?);
        Some(Self {
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Where field `slot` is stored, or `None` when it is absent.
    pub(super) fn field(&self, slot: u16) -> Option<usize> {
        let slot = usize::from(slot);
        if slot + 2 > self.vtable_len {
            return None;
        }
        let offset = u16::read(self.buf, self.vtable.checked_add(slot)?)?;
        if offset == 0 {
            return None;
        }
        self.pos.checked_add(usize::from(offset))
    }

    pub(super) fn scalar<T: Scalar>(&self, slot: u16) -> Option<T> {
        T::read(self.buf, self.field(slot)?)
    }

    pub(super) fn table(&self, slot: u16) -> Option<TableRef<'b>> {
        TableRef::at(self.buf, read_offset(self.buf, self.field(slot)?)?)
    }

    pub(super) fn string(&self, slot: u16) -> Option<&'b str> {
        read_str(self.buf, read_offset(self.buf, self.field(slot)?)?)
    }

    pub(super) fn vector(&self, slot: u16) -> Option<VectorRef<'b>> {
        VectorRef::at(self.buf, read_offset(self.buf, self.field(slot)?)?)
    }
}

/// A vector in a verified buffer: `len` elements from `start`.
#[derive(Clone, Copy)]
pub(super) struct VectorRef<'b> {
    buf: &'b [u8],
    start: usize,
    /// Number of elements.
    pub(super) len: usize,
}

impl<'b> VectorRef<'b> {
    pub(super) fn at(buf: &'b [u8], pos: usize) -> Option<Self> {
        Some(Self {
            buf,
            start: pos.checked_add(4)?,
            len: usize::try_from(u32::read(buf, pos)?).ok()?,
        })
    }

    /// Position of the offset element `index`.
    pub(super) fn offset_at(&self, index: usize) -> Option<usize> {
        self.start.checked_add(index.checked_mul(4)?)
    }

    pub(super) fn table(&self, index: usize) -> Option<TableRef<'b>> {
        TableRef::at(self.buf, read_offset(self.buf, self.offset_at(index)?)?)
    }

    pub(super) fn string(&self, index: usize) -> Option<&'b str> {
        read_str(self.buf, read_offset(self.buf, self.offset_at(index)?)?)
    }

    /// The raw elements of a vector of `element_bytes`-sized scalars or structs.
    pub(super) fn bytes(&self, element_bytes: usize) -> Option<&'b [u8]> {
        let end = self
            .start
            .checked_add(self.len.checked_mul(element_bytes)?)?;
        self.buf.get(self.start..end)
    }
}

/// The root table of `body`.
pub(super) fn root(body: &[u8]) -> Option<TableRef<'_>> {
    TableRef::at(body, usize::try_from(u32::read(body, 0)?).ok()?)
}
