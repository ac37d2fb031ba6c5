# FinOps guardrails: cost allocation tags and budgets.
#
# Reads:
#   input.request.spec.{team, owner, costCenter, environment}  (the FinOps tags)
#   input.estimate.{monthly, currency}
#   data.finops.{required_tags, cost_center_pattern, currency, monthly_budget, warn_ratio}  (data.json)
package paver.finops

import rego.v1

spec := object.get(object.get(input, "request", {}), "spec", {})

tag_value(name) := v if {
	v := spec[name]
	is_string(v)
	trim_space(v) != ""
}

deny contains v if {
	some tag in data.finops.required_tags
	not tag_value(tag)
	v := {
		"id": "finops-tags",
		"msg": sprintf("spec.%s is required: it tags every resource the service creates for cost allocation", [tag]),
		"severity": "medium",
		"path": sprintf("spec.%s", [tag]),
	}
}

deny contains v if {
	cc := tag_value("costCenter")
	not regex.match(data.finops.cost_center_pattern, cc)
	v := {
		"id": "cost-center-format",
		"msg": sprintf("cost center %q does not look like a cost center (expected %s)", [cc, data.finops.cost_center_pattern]),
		"severity": "medium",
		"path": "spec.costCenter",
	}
}

budget := data.finops.monthly_budget[spec.environment]

monthly := input.estimate.monthly if {
	is_number(input.estimate.monthly)
	object.get(input.estimate, "currency", data.finops.currency) == data.finops.currency
}

# Whole currency units, so messages read the same in every Rego engine.
whole(x) := format_int(ceil(x), 10)

needs_approval contains msg if {
	monthly > budget
	msg := sprintf(
		"the estimate of %s %s/month exceeds the %s budget of %s %s/month",
		[whole(monthly), data.finops.currency, spec.environment, whole(budget), data.finops.currency],
	)
}

warn contains v if {
	monthly <= budget
	monthly > budget * data.finops.warn_ratio
	v := {
		"id": "budget-nearly-used",
		"msg": sprintf("the estimate of %s %s/month uses more than %s%% of the %s budget", [whole(monthly), data.finops.currency, whole(data.finops.warn_ratio * 100), spec.environment]),
	}
}

warn contains v if {
	currency := input.estimate.currency
	currency != data.finops.currency
	v := {
		"id": "estimate-currency",
		"msg": sprintf("the estimate is in %s; budgets are in %s, so it was not compared", [currency, data.finops.currency]),
	}
}
