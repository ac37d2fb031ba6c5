package paver.hostile

needs_approval contains "over budget" if input.estimate.monthly > 1000

deny contains "no estimate" if not is_number(input.estimate.monthly)
