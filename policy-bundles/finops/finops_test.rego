package paver.finops_test

import data.paver.finops
import rego.v1

ids(findings) := {f.id | some f in findings}

base := {
	"request": {"spec": {
		"team": "payments",
		"owner": "payments-oncall@example.com",
		"costCenter": "CC-4021",
		"environment": "production",
	}},
	"estimate": {"monthly": 1200, "currency": "USD", "items": []},
}

with_spec(extra) := object.union(base, {"request": {"spec": extra}})

with_monthly(m) := object.union(base, {"estimate": {"monthly": m}})

test_compliant_base_has_no_findings if {
	count(finops.deny) == 0 with input as base
	count(finops.warn) == 0 with input as base
	count(finops.needs_approval) == 0 with input as base
}

test_missing_cost_center if {
	findings := finops.deny with input as with_spec({"costCenter": ""})
	some f in findings
	f.id == "finops-tags"
	f.path == "spec.costCenter"
}

test_missing_team_tag if {
	findings := finops.deny with input as {"request": {"spec": {"owner": "o", "costCenter": "CC-1000", "environment": "staging"}}}
	some f in findings
	f.path == "spec.team"
}

test_cost_center_format if {
	"cost-center-format" in ids(finops.deny) with input as with_spec({"costCenter": "marketing"})
}

test_over_budget_needs_approval if {
	reasons := finops.needs_approval with input as with_monthly(7400.25)
	reasons == {"the estimate of 7401 USD/month exceeds the production budget of 5000 USD/month"}
}

test_budget_is_per_environment if {
	inp := object.union(with_monthly(1200), {"request": {"spec": {"environment": "development"}}})
	count(finops.needs_approval) == 1 with input as inp
}

test_nearly_over_budget_warns if {
	"budget-nearly-used" in ids(finops.warn) with input as with_monthly(4500)
	count(finops.needs_approval) == 0 with input as with_monthly(4500)
}

test_other_currency_is_not_compared if {
	inp := object.union(with_monthly(90000), {"estimate": {"currency": "EUR"}})
	count(finops.needs_approval) == 0 with input as inp
	"estimate-currency" in ids(finops.warn) with input as inp
}
