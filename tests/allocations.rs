//! How many heap allocations a cache hit makes through `ApiKeyAuth`, counted by
//! a global allocator that counts the allocations of the current thread while
//! a flag is set.
//!
//! In steady state (the key cached, its `last_used_at` throttle and its usage
//! count for today already warm) a hit allocates only in `http::Extensions`:
//! the map itself (a `Box`), its table, and one `Box` per value inserted
//! (`AccountId`, `ApiKeyId`, `AuthenticatedKey`). The lookup, the HMAC, the
//! bookkeeping and the response allocate nothing.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    convert::Infallible,
};

use http::{Request, Response};
use tower::{Service, ServiceExt, service_fn};
use tower_api_keys::{
    AccountId, ApiKeyAuth, ApiKeyValidator, KeyManager, NewApiKey, Pepper, store::MemoryRepository,
};
use uuid::Uuid;

/// Most allocations of a cache hit: the five of `http::Extensions` above.
const MAX_ALLOCATIONS: usize = 5;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

/// `System`, counting the allocations (not the frees) of a thread while its
/// `COUNTING` flag is set.
struct Counting;

fn count() {
    // `try_with`: an allocation during a thread's teardown is not counted.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = COUNT.try_with(|count| count.set(count.get() + 1));
        }
    });
}

// SAFETY: every call is passed on unchanged to `System`; the counters are
// const-initialised thread locals without destructors, whose access never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as `alloc`; `ptr` came from this allocator, that is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts counting this thread's allocations from zero.
fn start_counting() {
    COUNT.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
}

/// Stops counting; the allocations since [`start_counting`].
fn stop_counting() -> usize {
    COUNTING.with(|counting| counting.set(false));
    COUNT.with(Cell::get)
}

fn request(credential: &str) -> Request<String> {
    Request::get("/")
        .header("x-api-key", credential)
        .body(String::new())
        .unwrap()
}

/// Creates `keys` keys, makes each one's hit steady (two requests each), then
/// counts the allocations of one more hit of the first key.
async fn allocations_of_a_hit(keys: usize) -> usize {
    let pepper = Pepper::try_from("allocation-test-pepper-0123").unwrap();
    let validator = ApiKeyValidator::builder(MemoryRepository::new(), pepper)
        .with_cache_capacity(2 * keys as u64)
        .build();
    let manager = KeyManager::new(validator.clone()).with_max_keys_per_account(keys as u64);
    let account = AccountId::new(Uuid::new_v4());
    let mut credentials = Vec::with_capacity(keys);
    for index in 0..keys {
        let created = manager
            .create(account, NewApiKey::new(format!("key {index}")))
            .await
            .unwrap();
        credentials.push(created.credential());
    }
    let inner = service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let mut service = ApiKeyAuth::new(inner, validator.clone());
    // The first request of each key misses, the second is a hit that finds its
    // throttle and usage count already set.
    for _ in 0..2 {
        for credential in &credentials {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(request(credential))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    assert_eq!(validator.cached_entries().known, keys as u64);

    let request = request(&credentials[0]);
    let ready = service.ready().await.unwrap();
    // A hit is decided in `call` and its future is ready at once: no other
    // task of this thread runs in between.
    start_counting();
    let response = ready.call(request).await.unwrap();
    let made = stop_counting();
    assert_eq!(response.status(), 200);
    validator.shutdown().await;
    made
}

#[test]
fn the_counter_counts() {
    start_counting();
    let boxed = std::hint::black_box(Box::new(1_u64));
    let made = stop_counting();
    drop(boxed);
    assert_eq!(made, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_hit_with_one_key_cached_allocates_only_the_extensions() {
    let made = allocations_of_a_hit(1).await;
    println!("cache hit, 1 key cached: {made} allocations");
    assert!(
        made <= MAX_ALLOCATIONS,
        "{made} allocations (at most {MAX_ALLOCATIONS})"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_hit_with_4096_keys_cached_allocates_only_the_extensions() {
    let made = allocations_of_a_hit(4_096).await;
    println!("cache hit, 4096 keys cached: {made} allocations");
    assert!(
        made <= MAX_ALLOCATIONS,
        "{made} allocations (at most {MAX_ALLOCATIONS})"
    );
}
