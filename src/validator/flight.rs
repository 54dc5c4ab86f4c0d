//! Single flight: concurrent cache misses for one public key share one store
//! lookup.
//!
//! A [`Flight`] lives in the map only while someone waits for it: the map holds
//! a weak reference, every waiter a strong one, and the last waiter to go (the
//! lookup landed, or every request was cancelled) takes the flight out of the
//! map. An invalidation *retires* the key's flight, so that a request arriving
//! after it starts a lookup of its own instead of joining one that may have read
//! the row before the change.
//!
//! The map's lock also orders cache writes against invalidations: a flight
//! publishes its answer with [`Flight::land`], which runs only while the flight
//! is still current, under the same lock that [`Flights::retire`] takes. So an
//! answer read before an invalidation is never visible after it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use tokio::sync::OnceCell;

use crate::sync::lock;

type Map<T> = HashMap<Box<str>, Weak<Flight<T>>>;

/// The flights under way, by public key.
pub(crate) struct Flights<T> {
    map: Arc<Mutex<Map<T>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// One store lookup and everyone waiting for its answer.
pub(crate) struct Flight<T> {
    key: Box<str>,
    map: Weak<Mutex<Map<T>>>,
    answer: OnceCell<T>,
}

impl<T> Flights<T> {
    fn map(&self) -> MutexGuard<'_, Map<T>> {
        lock(&self.map)
    }

    /// The current flight for `key`, joined, or a new one.
    pub(crate) fn join(&self, key: &str) -> Arc<Flight<T>> {
        let mut map = self.map();
        if let Some(flight) = map.get(key).and_then(Weak::upgrade) {
            return flight;
        }
        let flight = Arc::new(Flight {
            key: key.into(),
            map: Arc::downgrade(&self.map),
            answer: OnceCell::new(),
        });
        map.insert(key.into(), Arc::downgrade(&flight));
        flight
    }

    /// Retires `key`'s flight, if any, and runs `then` under the same lock: no
    /// flight that started before this call can [`land`](Flight::land) after it,
    /// and no request after it joins such a flight.
    pub(crate) fn retire(&self, key: &str, then: impl FnOnce()) {
        let mut map = self.map();
        map.remove(key);
        then();
    }

    /// Retires every flight, then runs `then`, as [`Self::retire`].
    pub(crate) fn retire_all(&self, then: impl FnOnce()) {
        let mut map = self.map();
        map.clear();
        then();
    }

    /// Flights in the map.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

impl<T> Flight<T> {
    /// The flight's answer: computed by `lookup` on the first call, shared by
    /// every other. If the request computing it is cancelled, the next waiter
    /// runs its own `lookup`.
    pub(crate) async fn answer<F, Fut>(&self, lookup: F) -> &T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.answer.get_or_init(lookup).await
    }

    /// Runs `publish(true)` if this flight is still the current one for its key
    /// (no invalidation since it started), `publish(false)` otherwise, under the
    /// map's lock; then retires the flight, so that later requests read the
    /// cache (or start afresh) instead of joining it.
    pub(crate) fn land<R>(&self, publish: impl FnOnce(bool) -> R) -> R {
        let Some(map) = self.map.upgrade() else {
            return publish(false);
        };
        let mut map = lock(&map);
        let current = map
            .get(&self.key)
            .is_some_and(|flight| std::ptr::eq(flight.as_ptr(), self));
        let published = publish(current);
        if current {
            map.remove(&self.key);
        }
        published
    }
}

impl<T> Drop for Flight<T> {
    /// The last waiter is gone: take the flight out of the map if it is still
    /// there (a cancelled lookup must not stay behind).
    fn drop(&mut self) {
        let Some(map) = self.map.upgrade() else {
            return;
        };
        let mut map = lock(&map);
        if map
            .get(&self.key)
            .is_some_and(|flight| std::ptr::eq(flight.as_ptr(), self))
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn joiners_share_one_answer() {
        let flights = Flights::<u32>::default();
        let runs = AtomicUsize::new(0);
        let a = flights.join("k");
        let b = flights.join("k");
        assert!(Arc::ptr_eq(&a, &b));
        let lookup = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            7
        };
        assert_eq!(*a.answer(lookup).await, 7);
        assert_eq!(*b.answer(lookup).await, 7);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_retired_flight_is_not_joined_and_does_not_publish() {
        let flights = Flights::<u32>::default();
        let old = flights.join("k");
        let mut removed = false;
        flights.retire("k", || removed = true);
        assert!(removed);
        let new = flights.join("k");
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(!old.land(|current| current));
        assert!(new.land(|current| current));
        // Landing retires: the next request starts afresh.
        assert!(!Arc::ptr_eq(&new, &flights.join("k")));
    }

    #[tokio::test]
    async fn retire_all_retires_every_key() {
        let flights = Flights::<u32>::default();
        let a = flights.join("a");
        let b = flights.join("b");
        flights.retire_all(|| {});
        assert!(!a.land(|current| current));
        assert!(!b.land(|current| current));
    }

    #[tokio::test]
    async fn cancelled_waiters_leave_nothing_behind() {
        let flights = Flights::<u32>::default();
        for i in 0..10_000 {
            let flight = flights.join(&format!("k{i}"));
            let pending = flight.answer(std::future::pending::<u32>);
            assert!(pending.now_or_never().is_none());
        }
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_old_flight_does_not_remove_its_successor() {
        let flights = Flights::<u32>::default();
        let old = flights.join("k");
        flights.retire("k", || {});
        let new = flights.join("k");
        drop(old);
        assert_eq!(flights.len(), 1);
        drop(new);
        assert_eq!(flights.len(), 0);
    }
}
