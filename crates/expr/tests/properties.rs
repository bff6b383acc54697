//! Property tests over random programs, events and fuzz inputs.

use herald_expr::testgen::{self, Rng};
use herald_expr::{parser, Expression, Limits};
use proptest::prelude::*;

fn roomy() -> Limits {
    Limits {
        max_depth: 512,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn printing_a_tree_and_parsing_it_back_gives_the_same_tree(seed in any::<u64>()) {
        let program = testgen::program(&mut Rng::new(seed));
        let text = program.to_string();
        let parsed = parser::parse(&text, &roomy());
        prop_assert!(parsed.is_ok(), "{text}: {:?}", parsed.err());
        prop_assert_eq!(parsed.unwrap(), program, "{}", text);
    }

    #[test]
    fn evaluation_never_panics_and_never_exceeds_the_budget(seed in any::<u64>(), budget in 1u64..3000) {
        let mut rng = Rng::new(seed);
        let text = testgen::program(&mut rng).to_string();
        let limits = Limits { max_steps: budget, ..roomy() };
        let expression = Expression::compile_with(&text, &limits).expect("generated programs compile");
        for _ in 0..4 {
            let event = testgen::event(&mut rng, 3);
            let outcome = expression.evaluate(&event);
            prop_assert!(outcome.steps <= budget, "{} steps of {budget}: {text}", outcome.steps);
            let (value, steps) = expression.evaluate_value(&event);
            prop_assert_eq!(steps, outcome.steps);
            // A filter's result is the value when that is a Boolean.
            if let Ok(serde_json::Value::Bool(b)) = value {
                prop_assert_eq!(outcome.result, Ok(b));
            } else {
                prop_assert!(outcome.result.is_err());
            }
        }
    }

    #[test]
    fn fuzz_inputs_keep_every_invariant(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let events = [testgen::event(&mut rng, 4), serde_json::json!({"issue": {"key": "SP-1"}})];
        for _ in 0..20 {
            let input = testgen::fuzz_input(&mut rng);
            let checked = testgen::check_input(&input, &events);
            prop_assert!(checked.is_ok(), "{:?}: {}", String::from_utf8_lossy(&input), checked.unwrap_err());
        }
    }
}
