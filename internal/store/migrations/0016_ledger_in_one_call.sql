-- The ledger in one round trip: log_usage_batch bills one account's batch
-- of usage events in one call, so one statement and its implicit
-- transaction, with the rules of store.LogUsage applied to each event in
-- order (store.LogUsageBatch calls it; the equivalence tests hold it to
-- LogUsage, event for event).
--
-- mesh_money_apply is package money's Apply, the one rounding rule, for
-- the server's side: a times m parts per million, rounded to the nearest
-- micro-dollar, halves away from zero; 22003 (bigint out of range) when
-- it does not fit in 64 bits. TestSQLApplyMatchesApply pins the two together.
CREATE FUNCTION mesh_money_apply(a bigint, m bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    -- The cast to bigint raises 22003 past int64, where Apply overflows.
    q bigint := div(abs(a::numeric) * abs(m::numeric) + 500000, 1000000)::bigint;
BEGIN
    IF (a < 0) <> (m < 0) THEN
        RETURN -q;
    END IF;
    RETURN q;
END $$;

-- log_usage_batch takes the batch as parallel arrays, one element an event
-- (guest and hold '' for none; served: the call already ran outside any
-- hold, a hub's own record). It returns one row an event logged or found
-- logged before, in order, and when an event is refused a last row naming
-- the refusal (refusal 'suspended' with the reason, or 'guest_quota' with
-- the session): the events before it stay logged. An unknown account or a
-- session of another host raises P0002 and logs nothing, as does a model
-- without a price (detail 'price').
--
-- Locks: the account row, then the sessions the batch names in id order
-- (byte order), as LogUsage and ReserveHold take them.
--
-- Plans: the lookups in tables that grow (usage_events, holds) are planned
-- for each call (EXECUTE). A plan cached while a table was small scans it
-- whole on every call once it is not; planned per call, the lookups use
-- the indexes (the server's CPU per batch of three fell from 1.1 ms to
-- about 0.4 ms, measured).
--
-- Suspension: an event brings the account to its ceiling when the unbilled
-- balance reaches it, or, for an event not under a hold, when the balance
-- less credits plus the open part of the account's holds reaches it (the
-- event spent headroom that runs reserved: no new run may start).
CREATE FUNCTION log_usage_batch(p_account text, p_ids text[], p_projects text[], p_guests text[], p_models text[],
    p_prompt bigint[], p_completion bigint[], p_holds text[], p_served boolean[])
RETURNS TABLE (o_event text, o_cost_basis bigint, o_multiplier bigint, o_gross bigint, o_credits_applied bigint, o_charged bigint,
    o_duplicate boolean, o_suspended boolean, o_unbilled bigint, o_flush_due boolean, o_guest_remaining bigint, o_guest_capped boolean,
    o_refusal text, o_detail text, o_ceiling bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(array_length(p_ids, 1), 0);
    a_credits bigint; a_unbilled bigint; a_ceiling bigint; a_threshold bigint; a_status text; a_reason text; v_mult bigint;
    v_spent bigint := 0;
    sess text;
    left_ bigint;
    v_host text;
    v_remaining jsonb := '{}';
    v_touched text[] := '{}';
    v_logged jsonb;
    v_prices jsonb;
    v_holds jsonb;      -- id -> [guest, amount, settled, counts toward open]
    v_added jsonb := '{}'; -- hold id -> settled by this batch
    open_ bigint;
    prev jsonb;
    pr jsonb;
    hd jsonb;
    e text; g text; h text;
    held boolean; admitted boolean;
    cost bigint; gr bigint; applied bigint; chg bigint; grem bigint; capped boolean; susp boolean;
    before_ bigint; now_settled bigint;
    ins int[] := '{}';
    i_cost bigint[] := '{}'; i_gross bigint[] := '{}'; i_credits bigint[] := '{}'; i_charged bigint[] := '{}'; i_hold text[] := '{}';
BEGIN
    SELECT a.credits, a.unbilled, a.credit_ceiling, a.flush_threshold, a.status, a.suspended_reason, p.multiplier_ppm
        INTO a_credits, a_unbilled, a_ceiling, a_threshold, a_status, a_reason, v_mult
        FROM accounts a JOIN pricing_tiers p ON p.tier = a.tier WHERE a.id = p_account FOR UPDATE OF a;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account %', p_account USING ERRCODE = 'P0002', DETAIL = 'account';
    END IF;
    FOR sess IN SELECT DISTINCT gid COLLATE "C" FROM unnest(p_guests) AS t(gid) WHERE gid <> '' ORDER BY 1 LOOP
        SELECT gs.remaining, gs.host_id INTO left_, v_host FROM guest_sessions gs WHERE gs.id = sess FOR UPDATE;
        IF NOT FOUND OR v_host <> p_account THEN
            RAISE EXCEPTION 'guest session % of account %', sess, p_account USING ERRCODE = 'P0002', DETAIL = 'session';
        END IF;
        v_remaining := v_remaining || jsonb_build_object(sess, left_);
    END LOOP;
    EXECUTE 'SELECT coalesce(jsonb_object_agg(u.event_id, jsonb_build_array(u.cost_basis, u.multiplier_ppm, u.gross, u.credits_applied, u.charged)), ''{}'')
        FROM usage_events u WHERE u.event_id = ANY ($1)' INTO v_logged USING p_ids;
    SELECT coalesce(jsonb_object_agg(mp.model, jsonb_build_array(mp.prompt_per_mtok, mp.completion_per_mtok)), '{}')
        INTO v_prices FROM model_prices mp WHERE mp.model = ANY (p_models) OR mp.model = '*';
    v_holds := '{}';
    IF EXISTS (SELECT FROM unnest(p_holds) AS t(hid) WHERE hid <> '') THEN
        EXECUTE 'SELECT coalesce(jsonb_object_agg(ho.id, jsonb_build_array(coalesce(ho.guest_session, ''''), ho.amount, ho.settled,
                ho.state = ''active'' AND ho.expires_at > now())), ''{}'')
            FROM holds ho WHERE ho.id = ANY ($1) AND ho.account_id = $2' INTO v_holds USING p_holds, p_account;
    END IF;
    EXECUTE 'SELECT coalesce(sum(greatest(ho.amount - ho.settled, 0)), 0)
        FROM holds ho WHERE ho.account_id = $1 AND ho.state = ''active'' AND ho.expires_at > now()' INTO open_ USING p_account;

    o_refusal := '';
    o_detail := '';
    o_ceiling := 0;
    FOR i IN 1 .. n LOOP
        e := p_ids[i];
        prev := v_logged -> e;
        IF prev IS NOT NULL THEN
            -- A copy already logged returns the first result.
            o_event := e;
            o_cost_basis := prev ->> 0;
            o_multiplier := prev ->> 1;
            o_gross := prev ->> 2;
            o_credits_applied := prev ->> 3;
            o_charged := prev ->> 4;
            o_duplicate := true;
            o_suspended := false;
            o_unbilled := a_unbilled;
            o_flush_due := false;
            o_guest_remaining := 0;
            o_guest_capped := false;
            RETURN NEXT;
            CONTINUE;
        END IF;
        g := p_guests[i];
        h := p_holds[i];
        hd := CASE WHEN h <> '' THEN v_holds -> h END;
        held := hd IS NOT NULL AND hd ->> 0 = g;
        admitted := held OR p_served[i];
        IF a_status = 'suspended' AND NOT admitted THEN
            o_event := e;
            o_cost_basis := 0; o_multiplier := 0; o_gross := 0; o_credits_applied := 0; o_charged := 0;
            o_duplicate := false; o_suspended := false; o_unbilled := a_unbilled; o_flush_due := false;
            o_guest_remaining := 0; o_guest_capped := false;
            o_refusal := 'suspended';
            o_detail := a_reason;
            o_ceiling := a_ceiling;
            RETURN NEXT;
            EXIT;
        END IF;
        pr := coalesce(v_prices -> p_models[i], v_prices -> '*');
        IF pr IS NULL THEN
            RAISE EXCEPTION 'price of model %', p_models[i] USING ERRCODE = 'P0002', DETAIL = 'price';
        END IF;
        cost := mesh_money_apply((pr ->> 0)::bigint, p_prompt[i]) + mesh_money_apply((pr ->> 1)::bigint, p_completion[i]);
        gr := mesh_money_apply(cost, v_mult);
        grem := 0;
        capped := false;
        IF g <> '' THEN
            left_ := (v_remaining ->> g)::bigint;
            IF left_ <= 0 AND NOT admitted THEN
                o_event := e;
                o_cost_basis := 0; o_multiplier := 0; o_gross := 0; o_credits_applied := 0; o_charged := 0;
                o_duplicate := false; o_suspended := false; o_unbilled := a_unbilled; o_flush_due := false;
                o_guest_remaining := 0; o_guest_capped := false;
                o_refusal := 'guest_quota';
                o_detail := g;
                o_ceiling := a_ceiling;
                RETURN NEXT;
                EXIT;
            END IF;
            -- The host never pays beyond the quota.
            IF gr > left_ THEN
                gr := left_;
                capped := true;
            END IF;
            grem := left_ - gr;
            v_remaining := v_remaining || jsonb_build_object(g, grem);
            v_touched := v_touched || g;
        END IF;
        IF held THEN
            now_settled := (hd ->> 2)::bigint + coalesce((v_added ->> h)::bigint, 0);
            IF (hd ->> 3)::boolean THEN
                before_ := greatest((hd ->> 1)::bigint - now_settled, 0);
                open_ := open_ - before_ + greatest((hd ->> 1)::bigint - (now_settled + gr), 0);
            END IF;
            v_added := v_added || jsonb_build_object(h, coalesce((v_added ->> h)::bigint, 0) + gr);
        END IF;
        applied := least(a_credits, gr);
        chg := gr - applied;
        a_unbilled := a_unbilled + chg;
        a_credits := a_credits - applied;
        v_spent := v_spent + applied;
        susp := a_unbilled >= a_ceiling OR (NOT held AND gr > 0 AND a_unbilled - a_credits + open_ >= a_ceiling);
        IF susp AND a_status <> 'suspended' THEN
            -- A held call on an account suspended for another reason keeps it.
            a_status := 'suspended';
            a_reason := 'credit_ceiling';
        END IF;
        v_logged := v_logged || jsonb_build_object(e, jsonb_build_array(cost, v_mult, gr, applied, chg));
        ins := ins || i;
        i_cost := i_cost || cost;
        i_gross := i_gross || gr;
        i_credits := i_credits || applied;
        i_charged := i_charged || chg;
        i_hold := i_hold || CASE WHEN held THEN h END;
        o_event := e;
        o_cost_basis := cost;
        o_multiplier := v_mult;
        o_gross := gr;
        o_credits_applied := applied;
        o_charged := chg;
        o_duplicate := false;
        o_suspended := susp;
        o_unbilled := a_unbilled;
        o_flush_due := a_unbilled >= a_threshold;
        o_guest_remaining := grem;
        o_guest_capped := capped;
        RETURN NEXT;
    END LOOP;

    IF cardinality(ins) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO usage_events (event_id, account_id, project_id, guest_session, model, prompt_tokens, completion_tokens,
            cost_basis, multiplier_ppm, gross, credits_applied, charged, hold_id)
        SELECT p_ids[k], p_account, p_projects[k], nullif(p_guests[k], ''), p_models[k], p_prompt[k], p_completion[k],
            i_cost[o], v_mult, i_gross[o], i_credits[o], i_charged[o], i_hold[o]
        FROM unnest(ins) WITH ORDINALITY AS t(k, o);
    INSERT INTO journal (account_id, kind, ref, credits_delta, unbilled_delta)
        SELECT p_account, 'usage', p_ids[k], -i_credits[o], i_charged[o]
        FROM unnest(ins) WITH ORDINALITY AS t(k, o) ORDER BY o;
    UPDATE accounts SET credits = credits - v_spent, unbilled = a_unbilled, status = a_status, suspended_reason = a_reason
        WHERE id = p_account;
    IF cardinality(v_touched) > 0 THEN
        UPDATE guest_sessions gs SET remaining = (v_remaining ->> gs.id)::bigint
            WHERE gs.id = ANY (v_touched);
    END IF;
    IF v_added <> '{}' THEN
        UPDATE holds ho SET settled = ho.settled + x.v::bigint, updated_at = now()
            FROM jsonb_each_text(v_added) AS x(k, v) WHERE ho.id = x.k;
    END IF;
END $$;
