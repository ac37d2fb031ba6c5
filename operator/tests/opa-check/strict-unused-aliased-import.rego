package corpus

import data.lib.naming as n

ok if input.x
