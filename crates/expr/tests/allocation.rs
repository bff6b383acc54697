//! The claim in docs/benchmarks.md that evaluating the typical filter
//! allocates nothing: counted with an allocator that counts this thread's
//! allocations.

use herald_expr::Expression;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl Fn()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_typical_filter_allocates_nothing() {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("events/issue-created.json")).expect("event");
    let filter =
        Expression::compile("event.issue.fields?.issueType?.name == 'Bug'").expect("filter");
    let evaluations = allocations_during(|| {
        for _ in 0..100 {
            assert_eq!(filter.evaluate(&event).result, Ok(true));
        }
    });
    assert_eq!(evaluations, 0);
    // The counter does count: a filter that builds a list allocates.
    let building = Expression::compile("[event.issue.key].length == 1").expect("filter");
    assert!(allocations_during(|| assert_eq!(building.evaluate(&event).result, Ok(true))) > 0);
}
