package corpus

ids(findings) := {f.id | some f in findings}

passed(inp) := {id | some id, pass in inp; pass}

v := ids([{"id": 1}])

w := passed({"a": true})
