package corpus

import data.lib.naming as n

ok if n.valid(input.name)
