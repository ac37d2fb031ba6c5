package corpus

import data.lib

ok if input.x
