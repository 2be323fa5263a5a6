//! A restricted pickle machine that reads data and never runs code.
//!
//! Written by hand instead of using `serde-pickle` for reading, because
//! that crate expands every memo reference into a deep copy (a 1 MiB frame
//! that re-uses a memoised list can expand to gigabytes), converts nested
//! containers recursively with no depth limit (a deeply nested frame
//! overflows the stack), and allocates per element. Here containers are
//! shared by index, as Python shares references, so memory stays linear in
//! the frame size, nothing recurses, and strings borrow from the frame.
//!
//! Supported: every opcode of protocols 0 to 5 that builds plain data
//! (numbers, strings, bytes, lists, tuples; dicts and sets are accepted as
//! opaque values). Everything that imports or calls (`GLOBAL`,
//! `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ*`, `EXT*`,
//! persistent ids, out-of-band buffers) is refused.

use std::borrow::Cow;

/// A value on the pickle stack. Containers are indices into [`Store`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PVal<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, approximated.
    BigInt(f64),
    Float(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    List(usize),
    Tuple(usize, usize),
    /// A dict, set or frozenset: accepted, never looked into.
    Opaque,
}

/// The containers a pickle built; [`PVal::List`] and [`PVal::Tuple`] index them.
#[derive(Debug, Default)]
pub(crate) struct Store<'a> {
    lists: Vec<Vec<PVal<'a>>>,
    tuple_items: Vec<PVal<'a>>,
}

impl<'a> Store<'a> {
    /// The items of a list or tuple, or `None` for any other value.
    pub(crate) fn items(&self, value: &PVal<'a>) -> Option<&[PVal<'a>]> {
        match *value {
            PVal::List(index) => self.lists.get(index).map(Vec::as_slice),
            PVal::Tuple(start, end) => self.tuple_items.get(start..end),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PickleError {
    #[error("pickle ends before its STOP opcode")]
    Truncated,
    #[error("refused opcode {opcode:#04x} ({what}): pickles may only hold data")]
    Unsafe { opcode: u8, what: String },
    #[error("unsupported opcode {0:#04x}")]
    Unsupported(u8),
    #[error("unsupported pickle protocol {0}")]
    Protocol(u8),
    #[error("stack underflow")]
    StackUnderflow,
    #[error("malformed {0} literal")]
    BadLiteral(&'static str),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("memo id {0} is missing or out of range")]
    Memo(u64),
    #[error("{0} applied to a value that is not a container of that kind")]
    WrongContainer(&'static str),
}

impl PickleError {
    /// True when the pickle asked to import or call something.
    pub(crate) fn is_unsafe(&self) -> bool {
        matches!(self, PickleError::Unsafe { .. })
    }
}

/// Runs the pickle in `data` and returns the value at `STOP` with its containers.
///
/// # Errors
/// A [`PickleError`] saying why the pickle is unreadable or unsafe.
pub(crate) fn unpickle(data: &[u8]) -> Result<(PVal<'_>, Store<'_>), PickleError> {
    let mut machine = Machine {
        input: Reader { data, pos: 0 },
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        store: Store::default(),
    };
    let top = machine.run()?;
    Ok((top, machine.store))
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(PickleError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A text argument: the bytes up to (not including) the next `\n`.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let end = memchr::memchr(b'\n', rest).ok_or(PickleError::Truncated)?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn sized(&mut self, len: u64) -> Result<&'a [u8], PickleError> {
        let len = usize::try_from(len).map_err(|_| PickleError::Truncated)?;
        self.take(len)
    }
}

struct Machine<'a> {
    input: Reader<'a>,
    stack: Vec<PVal<'a>>,
    marks: Vec<usize>,
    memo: Vec<Option<PVal<'a>>>,
    store: Store<'a>,
}

impl<'a> Machine<'a> {
    fn run(&mut self) -> Result<PVal<'a>, PickleError> {
        loop {
            let opcode = self.input.byte()?;
            if opcode == b'.' {
                return self.pop();
            }
            self.step(opcode)?;
        }
    }

    fn step(&mut self, opcode: u8) -> Result<(), PickleError> {
        match opcode {
            0x80 => {
                let version = self.input.byte()?;
                if version > 5 {
                    return Err(PickleError::Protocol(version));
                }
            }
            0x95 => {
                self.input.take(8)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self
                    .stack
                    .last()
                    .cloned()
                    .ok_or(PickleError::StackUnderflow)?;
                self.stack.push(top);
            }
            b'N' => self.stack.push(PVal::None),
            0x88 => self.stack.push(PVal::Bool(true)),
            0x89 => self.stack.push(PVal::Bool(false)),
            _ => return self.step_values(opcode),
        }
        Ok(())
    }

    /// Opcodes that push numbers and strings.
    fn step_values(&mut self, opcode: u8) -> Result<(), PickleError> {
        let value = match opcode {
            b'I' => parse_text_int(self.input.line()?)?,
            b'L' => {
                let line = self.input.line()?;
                parse_text_int(line.strip_suffix(b"L").unwrap_or(line))?
            }
            b'J' => PVal::Int(i64::from(i32::from_le_bytes(self.input.fixed()?))),
            b'K' => PVal::Int(i64::from(self.input.byte()?)),
            b'M' => PVal::Int(i64::from(u16::from_le_bytes(self.input.fixed()?))),
            0x8a => {
                let len = self.input.byte()?;
                decode_long(self.input.sized(u64::from(len))?)
            }
            0x8b => {
                let len = i32::from_le_bytes(self.input.fixed()?);
                let len = u64::try_from(len).map_err(|_| PickleError::BadLiteral("long"))?;
                decode_long(self.input.sized(len)?)
            }
            b'F' => {
                let line = self.input.line()?;
                let text =
                    std::str::from_utf8(line).map_err(|_| PickleError::BadLiteral("float"))?;
                PVal::Float(
                    text.trim()
                        .parse()
                        .map_err(|_| PickleError::BadLiteral("float"))?,
                )
            }
            b'G' => PVal::Float(f64::from_be_bytes(self.input.fixed()?)),
            b'S' => PVal::Str(utf8(Cow::Owned(unescape_string(self.input.line()?)?))?),
            b'V' => PVal::Str(Cow::Owned(decode_raw_unicode_escape(self.input.line()?)?)),
            b'T' => {
                let len = i32::from_le_bytes(self.input.fixed()?);
                let len = u64::try_from(len).map_err(|_| PickleError::BadLiteral("string"))?;
                PVal::Str(utf8(Cow::Borrowed(self.input.sized(len)?))?)
            }
            b'U' | 0x8c => {
                let len = self.input.byte()?;
                PVal::Str(utf8(Cow::Borrowed(self.input.sized(u64::from(len))?))?)
            }
            b'X' => {
                let len = u32::from_le_bytes(self.input.fixed()?);
                PVal::Str(utf8(Cow::Borrowed(self.input.sized(u64::from(len))?))?)
            }
            0x8d => {
                let len = u64::from_le_bytes(self.input.fixed()?);
                PVal::Str(utf8(Cow::Borrowed(self.input.sized(len)?))?)
            }
            b'C' => {
                let len = self.input.byte()?;
                PVal::Bytes(Cow::Borrowed(self.input.sized(u64::from(len))?))
            }
            b'B' => {
                let len = u32::from_le_bytes(self.input.fixed()?);
                PVal::Bytes(Cow::Borrowed(self.input.sized(u64::from(len))?))
            }
            0x8e | 0x96 => {
                let len = u64::from_le_bytes(self.input.fixed()?);
                PVal::Bytes(Cow::Borrowed(self.input.sized(len)?))
            }
            _ => return self.step_containers(opcode),
        };
        self.stack.push(value);
        Ok(())
    }

    /// Opcodes that build containers or use the memo.
    fn step_containers(&mut self, opcode: u8) -> Result<(), PickleError> {
        match opcode {
            b']' => self.push_list(Vec::new()),
            b'l' => {
                let items = self.pop_mark()?;
                self.push_list(items);
            }
            b'a' => {
                let value = self.pop()?;
                self.top_list()?.push(value);
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.top_list()?.extend(items);
            }
            b')' => self.push_tuple(Vec::new()),
            b't' => {
                let items = self.pop_mark()?;
                self.push_tuple(items);
            }
            0x85..=0x87 => {
                let n = usize::from(opcode - 0x84);
                // Like `pop`, never take items from below the innermost MARK
                // (CPython's fence): that would leave the mark past the end
                // of the stack.
                let floor = self.marks.last().copied().unwrap_or(0);
                let at = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .filter(|&at| at >= floor)
                    .ok_or(PickleError::StackUnderflow)?;
                let items: Vec<_> = self.stack.drain(at..).collect();
                self.push_tuple(items);
            }
            b'}' | 0x8f => self.stack.push(PVal::Opaque),
            b'd' | 0x91 => {
                self.pop_mark()?;
                self.stack.push(PVal::Opaque);
            }
            b's' => {
                self.pop()?;
                self.pop()?;
                self.expect_opaque("SETITEM")?;
            }
            b'u' | 0x90 => {
                self.pop_mark()?;
                self.expect_opaque("SETITEMS")?;
            }
            _ => return self.step_memo(opcode),
        }
        Ok(())
    }

    fn step_memo(&mut self, opcode: u8) -> Result<(), PickleError> {
        match opcode {
            b'p' => {
                let id = parse_memo_id(self.input.line()?)?;
                self.memo_put(id)
            }
            b'q' => {
                let id = u64::from(self.input.byte()?);
                self.memo_put(id)
            }
            b'r' => {
                let id = u64::from(u32::from_le_bytes(self.input.fixed()?));
                self.memo_put(id)
            }
            0x94 => self.memo_put(self.memo.len() as u64),
            b'g' => {
                let id = parse_memo_id(self.input.line()?)?;
                self.memo_get(id)
            }
            b'h' => {
                let id = u64::from(self.input.byte()?);
                self.memo_get(id)
            }
            b'j' => {
                let id = u64::from(u32::from_le_bytes(self.input.fixed()?));
                self.memo_get(id)
            }
            _ => Err(self.refuse(opcode)),
        }
    }

    fn refuse(&mut self, opcode: u8) -> PickleError {
        let what = match opcode {
            b'c' => {
                let module = self.input.line().unwrap_or_default();
                let name = self.input.line().unwrap_or_default();
                format!(
                    "global {}.{}",
                    String::from_utf8_lossy(module),
                    String::from_utf8_lossy(name)
                )
            }
            0x93 => "stack global".to_owned(),
            b'R' => "reduce".to_owned(),
            b'b' => "build".to_owned(),
            b'i' | b'o' | 0x81 | 0x92 => "object construction".to_owned(),
            0x82..=0x84 => "extension registry".to_owned(),
            b'P' | b'Q' => "persistent id".to_owned(),
            0x97 | 0x98 => "out-of-band buffer".to_owned(),
            _ => return PickleError::Unsupported(opcode),
        };
        PickleError::Unsafe { opcode, what }
    }

    fn pop(&mut self) -> Result<PVal<'a>, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(PickleError::StackUnderflow);
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow)
    }

    fn pop_mark(&mut self) -> Result<Vec<PVal<'a>>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::StackUnderflow)?;
        Ok(self.stack.drain(mark..).collect())
    }

    fn push_list(&mut self, items: Vec<PVal<'a>>) {
        self.store.lists.push(items);
        self.stack.push(PVal::List(self.store.lists.len() - 1));
    }

    fn push_tuple(&mut self, items: Vec<PVal<'a>>) {
        let start = self.store.tuple_items.len();
        self.store.tuple_items.extend(items);
        self.stack
            .push(PVal::Tuple(start, self.store.tuple_items.len()));
    }

    fn top_list(&mut self) -> Result<&mut Vec<PVal<'a>>, PickleError> {
        match self.stack.last() {
            Some(PVal::List(index)) => Ok(&mut self.store.lists[*index]),
            _ => Err(PickleError::WrongContainer("APPEND")),
        }
    }

    fn expect_opaque(&self, what: &'static str) -> Result<(), PickleError> {
        match self.stack.last() {
            Some(PVal::Opaque) => Ok(()),
            _ => Err(PickleError::WrongContainer(what)),
        }
    }

    fn memo_put(&mut self, id: u64) -> Result<(), PickleError> {
        let value = self
            .stack
            .last()
            .cloned()
            .ok_or(PickleError::StackUnderflow)?;
        // Real picklers number memo entries from 0 upwards, one per PUT, so
        // an id beyond the frame's length is hostile: refuse it rather than
        // grow the table.
        let index = usize::try_from(id)
            .ok()
            .filter(|&index| index <= self.input.data.len())
            .ok_or(PickleError::Memo(id))?;
        if index >= self.memo.len() {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(value);
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Result<(), PickleError> {
        let value = usize::try_from(id)
            .ok()
            .and_then(|index| self.memo.get(index))
            .and_then(Option::clone)
            .ok_or(PickleError::Memo(id))?;
        self.stack.push(value);
        Ok(())
    }
}

fn utf8(bytes: Cow<'_, [u8]>) -> Result<Cow<'_, str>, PickleError> {
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| PickleError::InvalidUtf8),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|_| PickleError::InvalidUtf8),
    }
}

fn parse_memo_id(line: &[u8]) -> Result<u64, PickleError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or(PickleError::BadLiteral("memo id"))
}

/// Protocol-0 `INT`/`LONG` text; `I00`/`I01` are False/True.
fn parse_text_int(line: &[u8]) -> Result<PVal<'static>, PickleError> {
    match line {
        b"00" => return Ok(PVal::Bool(false)),
        b"01" => return Ok(PVal::Bool(true)),
        _ => {}
    }
    let text = std::str::from_utf8(line).map_err(|_| PickleError::BadLiteral("int"))?;
    let text = text.trim();
    if let Ok(value) = text.parse::<i64>() {
        return Ok(PVal::Int(value));
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PickleError::BadLiteral("int"));
    }
    text.parse::<f64>()
        .map(PVal::BigInt)
        .map_err(|_| PickleError::BadLiteral("int"))
}

/// `LONG1`/`LONG4`: little-endian two's complement of any length.
fn decode_long(bytes: &[u8]) -> PVal<'static> {
    if bytes.is_empty() {
        return PVal::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    if bytes.len() <= 8 {
        let mut word = if negative { [0xffu8; 8] } else { [0u8; 8] };
        word[..bytes.len()].copy_from_slice(bytes);
        return PVal::Int(i64::from_le_bytes(word));
    }
    // Too wide for i64: approximate, as Python's float() of it would.
    let mut magnitude = 0.0f64;
    for &byte in bytes.iter().rev() {
        let byte = if negative { !byte } else { byte };
        magnitude = magnitude * 256.0 + f64::from(byte);
    }
    PVal::BigInt(if negative {
        -(magnitude + 1.0)
    } else {
        magnitude
    })
}

/// Protocol-0 `STRING`: a Python 2 `repr()` of a byte string.
fn unescape_string(line: &[u8]) -> Result<Vec<u8>, PickleError> {
    let bad = PickleError::BadLiteral("string");
    let quote = *line.first().ok_or(bad.clone())?;
    if !(quote == b'\'' || quote == b'"') || line.len() < 2 || line[line.len() - 1] != quote {
        return Err(bad);
    }
    let body = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        i += 1;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let escape = *body.get(i).ok_or(bad.clone())?;
        i += 1;
        match escape {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\\' | b'\'' | b'"' => out.push(escape),
            b'\n' => {}
            b'x' => {
                let hex = body.get(i..i + 2).ok_or(bad.clone())?;
                let text = std::str::from_utf8(hex).map_err(|_| bad.clone())?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| bad.clone())?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut value = u32::from(escape - b'0');
                let mut digits = 1;
                while digits < 3 && i < body.len() && (b'0'..=b'7').contains(&body[i]) {
                    value = value * 8 + u32::from(body[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push((value & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Protocol-0 `UNICODE`: raw-unicode-escape (`\uXXXX`, `\UXXXXXXXX`, other
/// bytes are Latin-1 characters).
fn decode_raw_unicode_escape(line: &[u8]) -> Result<String, PickleError> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let byte = line[i];
        let width = match (byte, line.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => 0,
        };
        if width == 0 {
            out.push(char::from(byte));
            i += 1;
            continue;
        }
        let hex = line
            .get(i + 2..i + 2 + width)
            .ok_or(PickleError::BadLiteral("unicode"))?;
        let code = std::str::from_utf8(hex)
            .ok()
            .and_then(|text| u32::from_str_radix(text, 16).ok())
            .and_then(char::from_u32)
            .ok_or(PickleError::BadLiteral("unicode"))?;
        out.push(code);
        i += 2 + width;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top_items(data: &[u8]) -> Vec<PVal<'_>> {
        let (top, store) = unpickle(data).expect("valid pickle");
        store.items(&top).expect("a list").to_vec()
    }

    #[test]
    fn memo_references_share_instead_of_copying() {
        // [L, L, L] where L is one memoised list: three references, one list.
        let data = b"\x80\x02](K\x01K\x02eq\x00h\x00h\x00\x87.";
        let (top, store) = unpickle(data).expect("valid");
        let items = store.items(&top).expect("tuple").to_vec();
        assert_eq!(items, vec![PVal::List(0), PVal::List(0), PVal::List(0)]);
        assert_eq!(store.lists.len(), 1);
    }

    #[test]
    fn protocol_0_text_forms() {
        let data = b"(lp0\n(S'a\\x41\\n\\'b'\np1\nV\\u00e9x\np2\nI01\nL12345678901234567890L\nF1.5\ntp3\na.";
        let items = top_items(data);
        assert_eq!(items.len(), 1);
        let (top, store) = unpickle(data).expect("valid");
        let row = store
            .items(&store.items(&top).expect("list")[0])
            .expect("tuple");
        assert_eq!(row[0], PVal::Str(Cow::Borrowed("aA\n'b")));
        assert_eq!(row[1], PVal::Str(Cow::Borrowed("éx")));
        assert_eq!(row[2], PVal::Bool(true));
        assert_eq!(row[3], PVal::BigInt(12345678901234567890.0));
        assert_eq!(row[4], PVal::Float(1.5));
    }

    #[test]
    fn binary_longs_are_twos_complement() {
        assert_eq!(decode_long(&[]), PVal::Int(0));
        assert_eq!(decode_long(&[0xff]), PVal::Int(-1));
        assert_eq!(
            decode_long(&[0x00, 0xf1, 0x53, 0x65]),
            PVal::Int(1_700_000_000)
        );
        assert_eq!(decode_long(&[0xff, 0x7f]), PVal::Int(32767));
        assert_eq!(decode_long(&[0; 9]), PVal::BigInt(0.0));
        assert_eq!(decode_long(&[0xff; 9]), PVal::BigInt(-1.0));
    }

    #[test]
    fn code_and_objects_are_refused() {
        let cases: &[&[u8]] = &[
            b"cos\nsystem\n(S'echo hi'\ntR.",
            b"\x80\x04\x8c\x02os\x8c\x06system\x93.",
            b"\x80\x02cdecimal\nDecimal\nq\x00X\x01\x00\x00\x001\x85Rq\x01.",
        ];
        for data in cases {
            let err = unpickle(data).expect_err("must refuse");
            assert!(err.is_unsafe(), "{err}");
        }
    }

    #[test]
    fn malformed_pickles_are_errors_not_panics() {
        let cases: &[(&[u8], PickleError)] = &[
            (b"", PickleError::Truncated),
            (b"]", PickleError::Truncated),
            (b".", PickleError::StackUnderflow),
            (b"a.", PickleError::StackUnderflow),
            (b"\x80\x09].", PickleError::Protocol(9)),
            (b"X\xff\xff\xff\xff", PickleError::Truncated),
            (
                b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
                PickleError::Truncated,
            ),
            (b"h\x05.", PickleError::Memo(5)),
            (b"N\x8a\x01", PickleError::Truncated),
            (b"NK\x01a.", PickleError::WrongContainer("APPEND")),
            (b"U\x02\xff\xfe.", PickleError::InvalidUtf8),
            (b"]r\xff\xff\xff\x00.", PickleError::Memo(0x00ff_ffff)),
        ];
        for (data, expected) in cases {
            assert_eq!(
                unpickle(data).map(|_| ()),
                Err(expected.clone()),
                "{data:?}"
            );
        }
    }
}
