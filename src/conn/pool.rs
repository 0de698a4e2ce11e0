//! A small pool of connections (or anything opened asynchronously): at most `size` in use at
//! once, idle ones kept for the next taker, broken ones dropped by their taker.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Up to `size` items, opened on demand.
pub struct Pool<T> {
    idle: Mutex<Vec<T>>,
    permits: Semaphore,
}

/// An item taken from a [`Pool`]: back to the pool when dropped, unless discarded.
pub struct Pooled<'a, T> {
    item: Option<T>,
    pool: &'a Pool<T>,
    _permit: SemaphorePermit<'a>,
}

impl<T> Pool<T> {
    /// A pool of at most `size` items (at least one).
    pub fn new(size: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), permits: Semaphore::new(size.max(1)) }
    }

    /// Waits for a free slot, then takes an idle item that `usable` accepts, or opens one.
    pub async fn get<E, F: Future<Output = Result<T, E>>>(
        &self,
        usable: impl Fn(&T) -> bool,
        open: impl FnOnce() -> F,
    ) -> Result<Pooled<'_, T>, E> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        loop {
            let idle = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or_default();
            match idle {
                Some(item) if usable(&item) => {
                    return Ok(Pooled { item: Some(item), pool: self, _permit: permit });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let item = open().await?;
        Ok(Pooled { item: Some(item), pool: self, _permit: permit })
    }
}

impl<T> Pooled<'_, T> {
    /// Drops the item instead of returning it (its connection broke).
    pub fn discard(mut self) {
        self.item = None;
    }
}

impl<T> std::ops::Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item.as_ref().expect("taken until dropped")
    }
}

impl<T> std::ops::DerefMut for Pooled<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().expect("taken until dropped")
    }
}

impl<T> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_are_reused_and_discarded_ones_are_not() {
        let pool = Pool::new(2);
        let opened = std::sync::atomic::AtomicUsize::new(0);
        let open =
            || async { Ok::<_, ()>(opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) };
        let a = pool.get(|_| true, open).await.expect("a");
        let b = pool.get(|_| true, open).await.expect("b");
        assert_eq!((*a, *b), (0, 1));
        drop(a);
        let c = pool.get(|_| true, open).await.expect("c");
        assert_eq!(*c, 0, "the idle one is taken again");
        c.discard();
        let d = pool.get(|&n| n != 0, open).await.expect("d");
        assert_eq!(*d, 2, "a discarded item is gone");
        drop((b, d));
        let e = pool.get(|&n| n != 2, open).await.expect("e");
        assert_eq!(*e, 1, "an item `usable` refuses is dropped");
        drop(e);
        assert_eq!(pool.idle.lock().expect("lock").len(), 1);
    }
}
