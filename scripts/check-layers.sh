#!/usr/bin/env bash
# Checks the one-way arrows between precopy's modules (ARCHITECTURE.md, "Layers"):
# each module may name only the modules listed for it (as `crate::NAME`). Exits
# non-zero and prints the offending lines when a module reaches past its layer.
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [layout]=""
  [schedule]=""
  [bitmap]="layout"
  [codec]="layout"
  [wire]="layout codec"
  [memory]="layout codec"
  [engine]="layout bitmap codec wire memory schedule"
  [runtime]="layout bitmap codec wire memory schedule engine"
  [workload]="layout bitmap codec wire memory schedule engine"
  [sim]="layout bitmap codec wire memory schedule engine workload"
  [kvm]="layout bitmap codec wire memory schedule engine runtime"
)
status=0
for module in "${!allowed[@]}"; do
  [ -e "src/$module" ] || continue
  names=$(grep -rhoE 'crate::[a-z_]+' "src/$module" | sort -u | sed 's/crate:://')
  for name in $names; do
    case " ${allowed[$module]} $module " in
      *" $name "*) ;;
      *)
        echo "src/$module names crate::$name, which is not below it:"
        grep -rn "crate::$name" "src/$module" | head -5
        status=1
        ;;
    esac
  done
done
[ "$status" = 0 ] && echo "layers: every arrow points down"
exit "$status"
