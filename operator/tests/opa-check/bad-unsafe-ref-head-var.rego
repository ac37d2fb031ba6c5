package corpus

ok if obj.field == 1
