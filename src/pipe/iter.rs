//! Receiving as iteration (`for v in &pipe`), ending when the pipe is closed and
//! drained; and sending a batch to a broadcast.

use super::error::{BatchError, RecvError, SendError};
use super::{Broadcast, BroadcastRecvError, Pipe, Subscriber};
use crate::shm::ShmVal;

/// The values of a pipe as they arrive ([`Pipe::iter`]): each `recv` blocks; the
/// iteration ends when the pipe is closed and everything in it was received. An
/// error (a broken pipe) is an item, after which the iteration ends.
#[derive(Debug)]
pub struct Iter<'a> {
    pipe: &'a Pipe,
    done: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<ShmVal, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.pipe.recv() {
            Ok(v) => Some(Ok(v)),
            Err(RecvError::Closed) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Pipe {
    /// Receives value after value, blocking, until the pipe is closed and drained.
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pipe, Pool, PoolOptions, ShmVal};
    /// # let pool = Pool::create_with(&format!("doc-iter-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let pipe = Pipe::create(&pool, "work", 16)?;
    /// for i in 0..3i64 {
    ///     pipe.send(ShmVal::from(i))?;
    /// }
    /// pipe.close(); // the receiver still gets what is in it, then the loop ends
    /// let mut sum = 0;
    /// for v in &pipe {
    ///     sum += v?.as_i64().unwrap_or(0);
    /// }
    /// assert_eq!(sum, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            pipe: self,
            done: false,
        }
    }
}

impl<'a> IntoIterator for &'a Pipe {
    type Item = Result<ShmVal, RecvError>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The values of a broadcast as this subscriber receives them
/// ([`Subscriber::iter`]); ends when the broadcast is closed and this subscriber
/// has everything. [`BroadcastRecvError::Lagged`] is an item (the iteration goes on
/// with the oldest value still there); another error ends it.
#[derive(Debug)]
pub struct SubscriberIter<'a> {
    sub: &'a Subscriber,
    done: bool,
}

impl Iterator for SubscriberIter<'_> {
    type Item = Result<ShmVal, BroadcastRecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.sub.recv() {
            Ok(v) => Some(Ok(v)),
            Err(BroadcastRecvError::Closed) => {
                self.done = true;
                None
            }
            Err(e @ BroadcastRecvError::Lagged(_)) => Some(Err(e)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Subscriber {
    /// Receives value after value, blocking, until the broadcast is closed and this
    /// subscriber has received everything.
    pub fn iter(&self) -> SubscriberIter<'_> {
        SubscriberIter {
            sub: self,
            done: false,
        }
    }
}

impl<'a> IntoIterator for &'a Subscriber {
    type Item = Result<ShmVal, BroadcastRecvError>;
    type IntoIter = SubscriberIter<'a>;

    fn into_iter(self) -> SubscriberIter<'a> {
        self.iter()
    }
}

impl Broadcast {
    /// Sends every value of `values` in order to every subscriber, waiting for room
    /// as the policy says; on success `values` is empty. Returns how many were sent.
    ///
    /// # Errors
    /// [`BatchError::WrongPool`] (nothing sent), [`BatchError::Closed`],
    /// [`BatchError::Broken`]; the values not sent stay in `values`, in order.
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Broadcast, Policy, Pool, PoolOptions, ShmVal};
    /// # let pool = Pool::create_with(&format!("doc-bmany-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let news = Broadcast::create(&pool, "news", 16, Policy::DropOldest)?;
    /// let sub = news.subscribe()?;
    /// let mut batch: Vec<ShmVal> = (0..4i64).map(ShmVal::from).collect();
    /// assert_eq!(news.send_many(&mut batch)?, 4);
    /// news.close();
    /// let got: Vec<i64> = sub.iter().map(|v| v.unwrap().as_i64().unwrap()).collect();
    /// assert_eq!(got, [0, 1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_many(&self, values: &mut Vec<ShmVal>) -> Result<usize, BatchError> {
        if let Some(i) = values.iter().position(|v| !v.fits(self.pool())) {
            return Err(BatchError::WrongPool(i));
        }
        let mut it = std::mem::take(values).into_iter();
        let mut sent = 0;
        while let Some(v) = it.next() {
            if let Err(e) = self.send(v) {
                let (v, why) = match e {
                    SendError::Closed(v) => (v, BatchError::Closed),
                    SendError::Broken(v, f) => (v, BatchError::Broken(f)),
                    SendError::WrongPool(v) => (v, BatchError::WrongPool(0)),
                    SendError::Full(v) | SendError::Timeout(v) => (v, BatchError::Timeout),
                };
                values.push(v);
                values.extend(it);
                return Err(why);
            }
            sent += 1;
        }
        Ok(sent)
    }
}
