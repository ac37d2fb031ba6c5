package corpus

allowed_regions := data.config.regions

deny contains "region" if not input.region in allowed_regions

test_region if {
	count(deny) == 1 with input as {"region": "mars"} with data.config.regions as ["eu"]
}
