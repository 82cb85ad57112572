#!/usr/bin/env bash
# `make demo`: start `si dev` in the background (unless it already runs), run
# the scenario against it, and leave the stack running. `make demo-stop` ends it.
set -euo pipefail
SI=${SI:-bin/si}
DEMO_DIR=${DEMO_DIR:-$HOME/.si/dev}
PIDFILE=$DEMO_DIR/demo.pid
LOG=$DEMO_DIR/dev.log

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if ! running; then echo "no demo si dev is running"; rm -f "$PIDFILE"; exit 0; fi
  pid=$(cat "$PIDFILE")
  kill -INT "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then echo "si dev (pid $pid) did not stop within a minute" >&2; exit 1; fi
  rm -f "$PIDFILE"
  echo "si dev stopped"
  exit 0
fi

mkdir -p "$DEMO_DIR"
if running; then
  echo "si dev already running (pid $(cat "$PIDFILE")), log in $LOG"
else
  echo "starting si dev in the background (log: $LOG)..."
  nohup "$SI" dev --data-dir "$DEMO_DIR" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 360); do
    grep -q '^ready in' "$LOG" 2>/dev/null && break
    if ! running; then echo "si dev exited:" >&2; cat "$LOG" >&2; rm -f "$PIDFILE"; exit 1; fi
    sleep 0.5
  done
  grep -q '^ready in' "$LOG" || { echo "si dev not ready after 3 minutes; see $LOG" >&2; exit 1; }
fi
sed -n '/^si dev:/,/^ready in/p' "$LOG"
# The customer commands below talk to this si dev's API as its "dev"
# account, whatever si login holds.
SI_TOKEN=$(cat "$DEMO_DIR/dev-token")
SI_API_URL=$(sed -n 's/.*"public_url": "\(.*\)".*/\1/p' "$DEMO_DIR/dev.json")
export SI_TOKEN SI_API_URL

echo
echo "== 0. Knowledge credits for the dev account (spent before anything is billed)"
"$SI" credit add --dev-dir "$DEMO_DIR" --amount 0.0005 | grep -E "^(account|credits|unbilled)"
echo
echo "== 1. A consensus reached in the first round"
"$SI" ask "What is the capital of France?"
echo
echo "== 2. A consensus that ends with the Arbiter"
echo "   ([sim:disagree] makes the simulator's Ethos hold out, so the rounds run out)"
"$SI" ask --max-rounds 2 "Is P equal to NP? [sim:disagree]"
echo
echo "== 3. An escalation through the local hub's QUIC tunnel to the cloud bridge"
"$SI" escalate "Explain TCP slow start in two sentences."
echo
echo "== 4. The hubs as the bridge sees them (vitals from NVML, or 'no GPU')"
"$SI" hubs --dev-dir "$DEMO_DIR"
echo
echo "== 5. Billing: every agent call logged once, in integer micro-dollars"
echo "   (six more contested questions first, quietly, so the balance passes a cent)"
for i in 1 2 3 4 5 6; do "$SI" ask --max-rounds 3 "Contested question $i [sim:disagree]" >/dev/null; done
"$SI" balance
echo
"$SI" usage --limit 8
echo
echo "== 6. A flush of the whole cents to Stripe (stripe-mock); the sub-cent rest stays unbilled"
"$SI" billing flush --dev-dir "$DEMO_DIR" || true
"$SI" account show --dev-dir "$DEMO_DIR" | grep -E "^(unbilled|charged)"
"$SI" billing flushes --dev-dir "$DEMO_DIR"
echo
echo "== 7. LoRA hot-swap: a generated adapter, validated, uploaded to MinIO, registered and loaded"
"$SI" lora new demo-expert --size 4
"$SI" push --expert demo-expert --project demo-team
lora_id=$("$SI" lora ls --json | sed -n 's/.*"id": "\(lora_[a-z2-7]*\)".*/\1/p' | head -1)
"$SI" lora ls
echo "   Logos answers through the adapter:"
"$SI" ask --lora "$lora_id" "Draft a reply to a password-reset ticket."
echo
echo "== 8. A guest: an invite with a quota billed to the host, accepted, partly spent"
out=$("$SI" invite --project demo-team --role editor --quota 2.00 --expires 24h)
printf '%s\n' "$out"
link=$(printf '%s\n' "$out" | sed -n 's/^link: *//p')
out=$("$SI" join "$link")
printf '%s\n' "$out"
guest=$(printf '%s\n' "$out" | sed -n 's/^secret ([^)]*): *//p')
echo "   The guest asks (a run is admitted only if its worst case fits the quota):"
"$SI" ask --guest "$guest" --max-rounds 1 "Summarise the sprint plan for the team."
"$SI" invite ls
echo
echo "== 9. A handover: project demo-team offered to a new owner (a multi-day workflow)"
if out=$("$SI" handover start --project demo-team --to ada@example.com 2>&1); then
  echo "$out"
else
  echo "$out"
  case "$out" in *"already has an open handover"*) ;; *) exit 1 ;; esac
fi
"$SI" handover ls
echo "   The offer email (with the accept link) is in Mailpit: http://127.0.0.1:8025"
echo "   The Temporal UI filters on HandoverStatus, HandoverRecipient, HandoverProject and HandoverStarted:"
echo "   http://127.0.0.1:8233/namespaces/default/workflows?query=HandoverStatus%3D%22pending%22"
echo "   Accept it with: $SI handover accept LINK   (logged in as the account with ada@example.com; or open the link)"
echo "   The operator's view of stuck handovers: $SI handover stuck"
"$SI" stats --dev-dir "$DEMO_DIR"
echo
echo "The dev account's dashboard (balance, usage, flushes, hubs, guests, the funnel): $SI_API_URL/"
echo "   sign in there with the API token in $DEMO_DIR/dev-token"
echo "All runs are in the Temporal UI: http://127.0.0.1:8233/namespaces/default/workflows"
echo "The stack keeps running (pid $(cat "$PIDFILE")). Try: $SI ask \"your question\""
echo "Stop it with: make demo-stop"
