//! The monthly cost estimate: a route's price table evaluated over a
//! request's parameters (defaults applied) and environment.
//!
//! `quantity` and `when` are minijinja expressions, evaluated with a small
//! fuel budget and semi-strict undefined handling: a quantity that refers to
//! a missing parameter is an error naming the cost item, never a silent 0.

use minijinja::{
    Environment, UndefinedBehavior,
    value::{Serde, Value as JinjaValue},
};
use paver_crds::CostModel;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::FieldError;

/// Fuel for evaluating one cost expression.
pub const EXPRESSION_FUEL: u64 = 20_000;

/// Currency used when the price table names none.
pub const DEFAULT_CURRENCY: &str = "USD";

/// A monthly cost estimate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Total per month, rounded to cents.
    pub monthly: f64,
    /// ISO currency code.
    pub currency: String,
    /// The items that counted, in price-table order.
    pub items: Vec<EstimateItem>,
}

/// One priced line of an estimate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimateItem {
    pub name: String,
    pub quantity: f64,
    pub unit_price: f64,
    /// `quantity * unit_price`, rounded to cents.
    pub monthly: f64,
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn expression_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(EXPRESSION_FUEL));
    // Errors name the undefined value (`parameters.replicas` is
    // undefined) in release builds too; minijinja keeps that for debug
    // builds unless asked. It costs nothing until an error is made.
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env
}

fn eval(env: &Environment<'_>, expr: &str, ctx: &JinjaValue) -> Result<JinjaValue, String> {
    let compiled = env
        .compile_expression(expr)
        .map_err(|e| format!("failed to parse {expr:?}: {e}"))?;
    compiled
        .eval(ctx)
        .map_err(|e| format!("failed to evaluate {expr:?}: {e}"))
}

/// The largest monthly estimate Paver accepts. Anything above it is a
/// mistake or an attack: `1.0e308` GiB would overflow to infinity, which
/// reaches policy as `null`, and a budget rule comparing `null` passes.
/// A trillion a month is far above any real service and far below where
/// an f64 loses whole cents' meaning for budgets.
pub const MAX_MONTHLY: f64 = 1e12;

/// Evaluates the price table. No table gives an empty estimate of 0.
pub fn estimate(
    cost: Option<&CostModel>,
    parameters: &Value,
    environment: &str,
) -> Result<Estimate, FieldError> {
    let Some(cost) = cost else {
        return Ok(Estimate {
            currency: DEFAULT_CURRENCY.into(),
            ..Default::default()
        });
    };
    let env = expression_env();
    let ctx = JinjaValue::from(Serde(
        json!({ "parameters": parameters, "environment": environment }),
    ));
    let mut items = Vec::new();
    let mut total = 0.0;
    for (i, item) in cost.items.iter().enumerate() {
        let field = |what: &str| format!("spec.cost.items[{i}].{what}");
        if let Some(when) = item.when.as_deref() {
            let v = eval(&env, when, &ctx)
                .map_err(|m| FieldError::new(field("when"), format!("cost item {:?}: {m}", item.name)))?;
            if !v.is_true() {
                continue;
            }
        }
        let v = eval(&env, &item.quantity, &ctx)
            .map_err(|m| FieldError::new(field("quantity"), format!("cost item {:?}: {m}", item.name)))?;
        let quantity = f64::try_from(v.clone())
            .ok()
            .filter(|q| q.is_finite() && *q >= 0.0 && !v.is_undefined() && !v.is_none())
            .ok_or_else(|| {
                FieldError::new(
                    field("quantity"),
                    format!(
                        "cost item {:?}: {:?} gave {v:?}, expected a non-negative number",
                        item.name, item.quantity
                    ),
                )
            })?;
        if !item.unit_price.is_finite() || item.unit_price < 0.0 {
            return Err(FieldError::new(
                field("unitPrice"),
                format!(
                    "cost item {:?}: expected a non-negative price, found {}",
                    item.name, item.unit_price
                ),
            ));
        }
        let monthly = quantity * item.unit_price;
        if !monthly.is_finite() || monthly > MAX_MONTHLY {
            return Err(FieldError::new(
                field("quantity"),
                format!(
                    "cost item {:?}: {} at {} per unit is more than {MAX_MONTHLY:e} a month; \
                     refused rather than passed to policy as a number it cannot compare",
                    item.name,
                    if quantity.abs() >= 1e15 {
                        format!("{quantity:e}")
                    } else {
                        quantity.to_string()
                    },
                    item.unit_price
                ),
            ));
        }
        total += monthly;
        if !total.is_finite() || total > MAX_MONTHLY {
            return Err(FieldError::new(
                field("quantity"),
                format!(
                    "the estimate passes {MAX_MONTHLY:e} a month at cost item {:?}; refused",
                    item.name
                ),
            ));
        }
        items.push(EstimateItem {
            name: item.name.clone(),
            quantity,
            unit_price: item.unit_price,
            monthly: cents(monthly),
        });
    }
    let currency = if cost.currency.is_empty() {
        DEFAULT_CURRENCY.to_string()
    } else {
        cost.currency.clone()
    };
    Ok(Estimate {
        monthly: cents(total),
        currency,
        items,
    })
}

#[cfg(test)]
mod tests {
    use paver_crds::CostItem;

    use super::*;

    fn item(name: &str, quantity: &str, unit_price: f64, when: Option<&str>) -> CostItem {
        CostItem {
            name: name.into(),
            quantity: quantity.into(),
            unit_price,
            when: when.map(Into::into),
        }
    }

    fn model(items: Vec<CostItem>) -> CostModel {
        CostModel {
            currency: "EUR".into(),
            items,
        }
    }

    /// A value that would overflow (or is merely absurd) is refused naming the
    /// item, never passed on as infinity (policy would see `null`).
    #[test]
    fn absurd_and_overflowing_estimates_are_refused() {
        let cost = model(vec![
            item("storage", "parameters.sizeGi", 0.023, None),
            item("runs", "parameters.runs", 24.0, None),
        ]);
        for params in [
            json!({"sizeGi": 1.0e308, "runs": 1}),
            json!({"sizeGi": 1, "runs": 1.0e308}),
            json!({"sizeGi": 5.0e13, "runs": 1}),
            json!({"sizeGi": 4.0e13, "runs": 4.0e10}),
        ] {
            let err = estimate(Some(&cost), &params, "production").expect_err("refused");
            assert!(err.field.starts_with("spec.cost.items["), "{err}");
            assert!(err.message.contains("refused"), "{err}");
        }
        let fine = estimate(Some(&cost), &json!({"sizeGi": 1000000, "runs": 10}), "production").expect("ok");
        assert_eq!(fine.monthly, 23_240.0);
    }

    #[test]
    fn sums_items_and_rounds_to_cents() {
        let cost = model(vec![
            item(
                "cpu",
                "parameters.compute.replicas * parameters.compute.cpu",
                24.333,
                None,
            ),
            item("db", "1", 100.0, Some("parameters.database is defined")),
            item("prod-only", "1", 10.0, Some("environment == 'production'")),
        ]);
        let params = json!({"compute": {"replicas": 3, "cpu": 0.5}});
        let est = estimate(Some(&cost), &params, "staging").expect("estimate");
        assert_eq!(est.currency, "EUR");
        assert_eq!(est.items.len(), 1);
        assert_eq!(est.items[0].quantity, 1.5);
        assert_eq!(est.monthly, 36.5);
    }

    #[test]
    fn sums_bucket_sizes_with_filters() {
        let cost = model(vec![item(
            "storage",
            "parameters.buckets | map(attribute='sizeGi') | sum",
            0.5,
            None,
        )]);
        let params = json!({"buckets": [{"sizeGi": 10}, {"sizeGi": 30}]});
        assert_eq!(
            estimate(Some(&cost), &params, "development")
                .expect("estimate")
                .monthly,
            20.0
        );
    }

    #[test]
    fn missing_parameter_names_the_item() {
        let cost = model(vec![item("cache", "parameters.cache.nodes", 50.0, None)]);
        let err = estimate(Some(&cost), &json!({}), "production").expect_err("missing");
        assert_eq!(err.field, "spec.cost.items[0].quantity");
        assert!(err.message.contains("\"cache\""), "{err}");
    }

    #[test]
    fn non_numeric_and_invalid_expressions_fail() {
        let cost = model(vec![item("x", "parameters.name", 1.0, None)]);
        let err = estimate(Some(&cost), &json!({"name": "abc"}), "production").expect_err("string");
        assert!(err.message.contains("non-negative number"), "{err}");
        let cost = model(vec![item("x", "1 +", 1.0, None)]);
        assert!(estimate(Some(&cost), &json!({}), "production").is_err());
        let cost = model(vec![item("x", "1", 1.0, Some("range(99999999) | list | length"))]);
        let err = estimate(Some(&cost), &json!({}), "production").expect_err("fuel");
        assert_eq!(err.field, "spec.cost.items[0].when");
    }

    #[test]
    fn no_cost_model_is_zero() {
        let est = estimate(None, &json!({}), "production").expect("estimate");
        assert_eq!(est.monthly, 0.0);
        assert_eq!(est.currency, "USD");
    }
}
