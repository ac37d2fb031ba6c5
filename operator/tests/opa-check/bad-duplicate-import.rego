package corpus

import data.lib.a
import data.lib.a

ok if a.x
