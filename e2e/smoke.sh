#!/usr/bin/env bash
# Check that a cluster from `e2e/cluster.sh up` really works: API server with
# RBAC, kwok nodes Ready, a Deployment becomes Available (controller-manager,
# scheduler, kwok), the Git server takes a clone and a push with the
# credentials and refuses them without. Prints "N passed, N failed".
#   e2e/cluster.sh up && e2e/smoke.sh; e2e/cluster.sh down
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$HERE/cluster.sh" env)"

passed=0 failed=0
check() { # NAME CMD...
  local name="$1"; shift
  local t0=${EPOCHREALTIME/./}
  if out="$("$@" 2>&1)"; then
    passed=$((passed + 1))
    printf 'ok   %-55s %6dms\n' "$name" $(((${EPOCHREALTIME/./} - t0) / 1000))
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n%s\n' "$name" "$out" | sed 's/^/  /'
  fi
}

admin() { kubectl --kubeconfig "$PAVER_E2E_ADMIN_KUBECONFIG" "$@"; }
operator() { kubectl --kubeconfig "$PAVER_E2E_OPERATOR_KUBECONFIG" "$@"; }

check "kubectl version (server v1.37.2)" \
  bash -c "kubectl --kubeconfig '$PAVER_E2E_ADMIN_KUBECONFIG' version | grep -q 'Server Version: v1.37.2'"
check "admin: get ns" admin get ns default kube-system
check "operator identity is who it should be" \
  bash -c "kubectl --kubeconfig '$PAVER_E2E_OPERATOR_KUBECONFIG' auth whoami -o jsonpath='{.status.userInfo.username}' | grep -qx '$PAVER_E2E_OPERATOR_USER'"
check "operator: RBAC denies list pods (no role bound yet)" \
  bash -c "kubectl --kubeconfig '$PAVER_E2E_OPERATOR_KUBECONFIG' get pods -A 2>&1 | grep -q Forbidden"
check "kwok nodes Ready" admin wait --for=condition=Ready node -l type=kwok --timeout=30s

ns="smoke-$RANDOM"
check "create namespace $ns" admin create namespace "$ns"
check "deployment created" admin -n "$ns" create deployment web --image=registry.invalid/web:1 --replicas=2
check "deployment Available (2/2)" admin -n "$ns" wait --for=condition=Available deployment/web --timeout=90s
check "pods Running on kwok nodes" \
  bash -c "kubectl --kubeconfig '$PAVER_E2E_ADMIN_KUBECONFIG' -n $ns get pods -o jsonpath='{range .items[*]}{.status.phase} {.spec.nodeName}{\"\\n\"}{end}' | tee /dev/stderr | awk 'NF!=2 || \$1!=\"Running\" || \$2 !~ /^kwok-node-/ {bad=1} END {exit bad || NR<2}'"
check "deployment deleted, pods garbage-collected" \
  bash -c "kubectl --kubeconfig '$PAVER_E2E_ADMIN_KUBECONFIG' -n $ns delete deployment web --wait=true --timeout=60s && for i in \$(seq 60); do [ -z \"\$(kubectl --kubeconfig '$PAVER_E2E_ADMIN_KUBECONFIG' -n $ns get pods -o name)\" ] && exit 0; sleep 1; done; exit 1"
check "namespace deleted (namespace controller)" admin delete namespace "$ns" --wait=true --timeout=90s

if [ -n "${GIT_URL:-}" ]; then
  work="$(mktemp -d)"
  helper="!f() { echo username=$GIT_USER; echo password=\$(cat $GIT_TOKEN_FILE); }; f"
  authgit() { git -c credential.helper= -c "credential.helper=$helper" "$@"; }
  export GIT_TERMINAL_PROMPT=0
  check "git clone with credentials" authgit clone -q "$GIT_URL" "$work/ok"
  check "git push with credentials" bash -c "cd '$work/ok' && echo smoke >smoke.txt && git add smoke.txt && git -c user.name=smoke -c user.email=smoke@localhost commit -qm smoke && git -c credential.helper= -c 'credential.helper=$helper' push -q origin main"
  check "pushed commit is on the server" \
    bash -c "git -c credential.helper= -c 'credential.helper=$helper' ls-remote '$GIT_URL' refs/heads/main | grep -q \"\$(git -C '$work/ok' rev-parse HEAD)\""
  check "git clone without credentials refused" bash -c "! git -c credential.helper= clone -q '$GIT_URL' '$work/anon'"
  check "git clone with a wrong password refused" bash -c "! git -c credential.helper= clone -q '${GIT_URL/http:\/\//http://$GIT_USER:wrong@}' '$work/wrong'"
  check "git push without credentials refused" bash -c "cd '$work/ok' && ! git -c credential.helper= push -q origin HEAD:refs/heads/anon"
  check "HTTP 401 without credentials" \
    bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' '$GIT_URL/info/refs?service=git-receive-pack')\" = 401 ]"
  rm -rf "$work"
fi

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
