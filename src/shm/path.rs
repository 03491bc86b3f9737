//! Values by path from the root table: `/config/db/port` is
//! `root["config"]["db"]["port"]`; a segment under a list is an index (`/jobs/0`).
//! A dict segment names a string key, or — when the dict has no such string key and
//! the segment is a decimal integer — an int key. Used by `shmval get/set/rm/dump`.

use super::{ShmList, ShmTab, ShmVal, ValError};
use crate::{Pool, Val};

/// Why a path could not be followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is not `/` or `/seg/seg…`.
    #[error("{0:?} is not a path (like /config/db)")]
    Syntax(String),
    /// A segment names nothing.
    #[error("{path}: no such key or index")]
    NotFound {
        /// The path up to the missing segment.
        path: String,
    },
    /// A segment goes into a value that holds none.
    #[error("{path}: a {kind}, which holds no {segment:?}")]
    NotAContainer {
        /// The path of the value.
        path: String,
        /// Its type.
        kind: &'static str,
        /// The segment asked for.
        segment: String,
    },
    /// A list element named by something other than an index.
    #[error("{path}: lists are indexed by numbers, not {segment:?}")]
    BadIndex {
        /// The path of the list.
        path: String,
        /// The segment.
        segment: String,
    },
    /// Not something that can be done at this path.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing the values.
    #[error(transparent)]
    Val(#[from] ValError),
}

fn segments(path: &str) -> Result<Vec<&str>, PathError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Syntax(path.to_owned()));
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Ok(segs)
}

/// A container met on the way.
enum Holder {
    Tab(ShmTab),
    List(ShmList),
}

fn holder(v: &ShmVal) -> Option<Holder> {
    if let Some(t) = v.as_tab() {
        return Some(Holder::Tab(t));
    }
    if let Some(t) = v.as_otab() {
        return Some(Holder::Tab(t.as_tab().clone()));
    }
    v.as_list().map(Holder::List)
}

/// The key a dict holds under `seg`: the string, else the int it spells.
fn tab_key(t: &ShmTab, seg: &str) -> Result<Option<Val>, ValError> {
    if t.contains_key(seg)? {
        return Ok(Some(Val::from(seg)));
    }
    if let Ok(i) = seg.parse::<i64>() {
        if t.contains_key(i)? {
            return Ok(Some(Val::I64(i)));
        }
    }
    Ok(None)
}

fn index(path: &str, seg: &str) -> Result<usize, PathError> {
    seg.parse().map_err(|_| PathError::BadIndex {
        path: path.to_owned(),
        segment: seg.to_owned(),
    })
}

impl Pool {
    /// The value at `path` (`/` is the root table).
    ///
    /// # Errors
    /// See [`PathError`].
    ///
    /// ```
    /// use shmval::{tab, Pool, PoolOptions, Val};
    /// # let name = format!("doc-path-{}", std::process::id());
    /// let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// pool.root()?.insert("config", tab! { "db" => tab! { "port" => 5432 } })?;
    /// assert_eq!(pool.get_path("/config/db/port")?.to_val()?, Val::I64(5432));
    /// pool.set_path("/config/db/host", &Val::from("localhost"))?;
    /// pool.remove_path("/config/db/port")?;
    /// assert_eq!(pool.get_path("/config")?.to_val()?.to_string(), "{'db': {'host': 'localhost'}}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_path(&self, path: &str) -> Result<ShmVal, PathError> {
        let segs = segments(path)?;
        self.walk(path, &segs)
    }

    fn walk(&self, path: &str, segs: &[&str]) -> Result<ShmVal, PathError> {
        let mut cur = self.root()?.as_val().clone();
        let mut at = String::new();
        for seg in segs {
            let next = match holder(&cur) {
                Some(Holder::Tab(t)) => match tab_key(&t, seg)? {
                    Some(k) => t.get(k)?,
                    None => None,
                },
                Some(Holder::List(l)) => l.get(index(&at, seg)?)?,
                None => {
                    return Err(PathError::NotAContainer {
                        path: if at.is_empty() { "/".into() } else { at },
                        kind: cur.type_name(),
                        segment: (*seg).to_owned(),
                    })
                }
            };
            at.push('/');
            at.push_str(seg);
            cur = next.ok_or_else(|| PathError::NotFound { path: at.clone() })?;
        }
        let _ = path;
        Ok(cur)
    }

    fn parent(&self, path: &str) -> Result<(Holder, String, String), PathError> {
        let segs = segments(path)?;
        let Some((last, up)) = segs.split_last() else {
            return Err(PathError::Refused(
                "the root table itself cannot be replaced or removed".into(),
            ));
        };
        let up_path = format!("/{}", up.join("/"));
        let p = self.walk(&up_path, up)?;
        let h = holder(&p).ok_or_else(|| PathError::NotAContainer {
            path: up_path.clone(),
            kind: p.type_name(),
            segment: (*last).to_owned(),
        })?;
        Ok((h, up_path, (*last).to_owned()))
    }

    /// Stores `value` (copied in) at `path`: a dict's key (made if absent; a string
    /// key unless the dict holds the int the segment spells) or a list's existing
    /// index. The dicts and lists on the way must exist.
    ///
    /// # Errors
    /// See [`PathError`].
    pub fn set_path(&self, path: &str, value: &Val) -> Result<(), PathError> {
        match self.parent(path)? {
            (Holder::Tab(t), _, seg) => {
                let key = tab_key(&t, &seg)?.unwrap_or_else(|| Val::from(seg.as_str()));
                t.insert(key, value.clone())?;
            }
            (Holder::List(l), up, seg) => {
                l.set(index(&up, &seg)?, value.clone())?;
            }
        }
        Ok(())
    }

    /// Removes what `path` names from its dict, returning it. (A list's element
    /// cannot be removed by path: set it, or pop the list.)
    ///
    /// # Errors
    /// See [`PathError`].
    pub fn remove_path(&self, path: &str) -> Result<ShmVal, PathError> {
        match self.parent(path)? {
            (Holder::Tab(t), up, seg) => {
                let gone = match tab_key(&t, &seg)? {
                    Some(k) => t.remove(k)?,
                    None => None,
                };
                gone.ok_or(PathError::NotFound {
                    path: format!("{}/{seg}", up.trim_end_matches('/')),
                })
            }
            (Holder::List(_), up, _) => Err(PathError::Refused(format!(
                "{up} is a list: its elements are set or popped, not removed by path"
            ))),
        }
    }
}
