package corpus

import data.lib

ok if lib.check(input)
