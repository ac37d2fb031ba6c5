package corpus

import data.lib.naming as n

deny contains msg if {
	not n.valid(input.request.metadata.name)
	msg := "bad name"
}
