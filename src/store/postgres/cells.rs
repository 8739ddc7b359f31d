//! Values between the store and PostgreSQL: a bound parameter takes the type the server inferred for it; a column
//! is read from its wire form by its type.

use crate::store::sql::db::{Cell, Param, Row, ToParam};
use anyhow::{Result, anyhow, bail};
use bytes::BytesMut;
use std::error::Error;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn Error + Sync + Send>;

/// A parameter as PostgreSQL takes it: the server infers each parameter's type from the statement; the value is
/// written in that type (an integer where a boolean is expected is a truth value; where text is expected, its
/// digits).
pub(super) struct Bound<'a>(pub &'a dyn ToParam);

impl std::fmt::Debug for Bound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.to_param())
    }
}

impl ToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (self.0.to_param(), ty) {
            (Param::Null, _) => Ok(IsNull::Yes),
            (Param::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Param::Int(i), &Type::INT4) => i32::try_from(i)?.to_sql(ty, out),
            (Param::Int(i), &Type::INT2) => i16::try_from(i)?.to_sql(ty, out),
            (Param::Int(i), &Type::BOOL) => (i != 0).to_sql(ty, out),
            (Param::Int(i), &Type::FLOAT8) => (i as f64).to_sql(ty, out),
            (Param::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().as_str().to_sql(ty, out),
            (Param::Real(r), &Type::FLOAT8) => r.to_sql(ty, out),
            (Param::Text(t), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN) => {
                t.to_sql(ty, out)
            }
            (Param::Text(t), &Type::JSONB) => {
                // JSONB's wire form: a version byte, then the text.
                out.extend_from_slice(&[1]);
                out.extend_from_slice(t.as_bytes());
                Ok(IsNull::No)
            }
            (Param::Text(t), &Type::JSON) => {
                out.extend_from_slice(t.as_bytes());
                Ok(IsNull::No)
            }
            (p, ty) => Err(format!("a parameter of type {ty} cannot take {p:?}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's wire form (`None`: NULL) and its type.
struct Raw<'a>(Option<&'a [u8]>, Type);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw), ty.clone()))
    }

    fn from_sql_null(ty: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None, ty.clone()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

pub(super) struct PgRow<'a>(pub &'a tokio_postgres::Row);

impl Row for PgRow<'_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>> {
        let Raw(raw, ty) = self.0.try_get::<_, Raw<'_>>(i).map_err(|e| anyhow!("column {i}: {e}"))?;
        let Some(raw) = raw else { return Ok(Cell::Null) };
        let fixed = |n: usize| -> Result<&[u8]> {
            if raw.len() == n { Ok(raw) } else { bail!("column {i}: {} bytes for a {ty}", raw.len()) }
        };
        Ok(match ty {
            Type::INT8 => Cell::Int(i64::from_be_bytes(fixed(8)?.try_into()?)),
            Type::INT4 => Cell::Int(i32::from_be_bytes(fixed(4)?.try_into()?).into()),
            Type::INT2 => Cell::Int(i16::from_be_bytes(fixed(2)?.try_into()?).into()),
            Type::BOOL => Cell::Bool(fixed(1)?[0] != 0),
            Type::FLOAT8 => Cell::Real(f64::from_be_bytes(fixed(8)?.try_into()?)),
            Type::FLOAT4 => Cell::Real(f32::from_be_bytes(fixed(4)?.try_into()?).into()),
            Type::NUMERIC => numeric(raw).ok_or_else(|| anyhow!("column {i}: a numeric billd cannot read"))?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                Cell::Text(std::str::from_utf8(raw).map_err(|e| anyhow!("column {i}: {e}"))?)
            }
            Type::JSONB => match raw.split_first() {
                Some((1, text)) => Cell::Text(std::str::from_utf8(text).map_err(|e| anyhow!("column {i}: {e}"))?),
                _ => bail!("column {i}: a jsonb of an unknown version"),
            },
            other => bail!("column {i}: billd does not read the type {other}"),
        })
    }
}

/// A NUMERIC's wire form (what `sum()` of integers gives) as an integer when it is whole, else a real.
fn numeric(raw: &[u8]) -> Option<Cell<'static>> {
    let word = |k: usize| raw.get(2 * k..2 * k + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, scale) = (word(0)? as usize, word(1)? as i16, word(2)?, word(3)?);
    if sign == 0xC000 {
        return None; // NaN
    }
    let mut whole: i128 = 0;
    let mut fraction = 0f64;
    for k in 0..ndigits {
        let digit = i128::from(word(4 + k)?);
        let power = i32::from(weight) - k as i32;
        if power >= 0 {
            whole = whole.checked_add(digit.checked_mul(10_000i128.checked_pow(power as u32)?)?)?;
        } else {
            fraction += digit as f64 * 10_000f64.powi(power);
        }
    }
    let negative = sign == 0x4000;
    if fraction == 0.0 {
        let n = i64::try_from(whole).ok()?;
        return Some(Cell::Int(if negative { -n } else { n }));
    }
    let _ = scale;
    let v = whole as f64 + fraction;
    Some(Cell::Real(if negative { -v } else { v }))
}

#[cfg(test)]
mod tests {
    use super::numeric;
    use crate::store::sql::db::Cell;

    fn wire(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn whole_numerics_are_integers() {
        // 123456789 = 1 * 10000^2 + 2345 * 10000 + 6789
        assert_eq!(numeric(&wire(&[3, 2, 0, 0, 1, 2345, 6789])), Some(Cell::Int(123_456_789)));
        assert_eq!(numeric(&wire(&[1, 0, 0x4000, 0, 42])), Some(Cell::Int(-42)));
        assert_eq!(numeric(&wire(&[0, 0, 0, 0])), Some(Cell::Int(0)));
        assert_eq!(numeric(&wire(&[2, 0, 0, 1, 1, 5000])), Some(Cell::Real(1.5)));
        assert_eq!(numeric(&wire(&[0, 0, 0xC000, 0])), None);
    }
}
