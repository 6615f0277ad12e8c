package main

import (
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ssrf"
)

type commsParts struct {
	bus      *comms.Bus
	router   *comms.Router
	webhooks *webhook.Engine
}

// startComms starts the event bus, the message router and the webhook
// engine, in that order (the engine watches the bus; shutdown runs in
// reverse).
func startComms(k *kernel.Kernel, db *store.DB, vault *store.Vault, auditLog *audit.Log, cfg Config, cs commsSettings) (*commsParts, error) {
	bus, err := comms.Start(k, db, comms.BusOptions{LogSize: cfg.Comms.EventLogSize, MaxStreamsPerKey: cfg.Comms.MaxStreamsPerKey})
	if err != nil {
		return nil, err
	}
	router, err := comms.StartRouter(k, db, comms.RouterOptions{Bus: bus, Audit: auditLog,
		Agents:         nil, // wired when the agent runtime lands (see docs/events.md)
		LoopMaxBounces: cfg.Comms.LoopGuardMaxBounces, LoopWindow: cs.loopWindow, TurnTimeout: cs.turnTimeout})
	if err != nil {
		return nil, err
	}
	guard, err := ssrf.New(cfg.NetworkPolicy.AllowHosts)
	if err != nil {
		return nil, err
	}
	eng, err := webhook.Start(k, db, webhook.Options{Bus: bus, Vault: vault, Guard: guard, Backoff: cs.backoff,
		Timeout: cs.webhookTimeout, DisableAfter: cfg.Webhooks.DisableAfter, MaxPending: cfg.Webhooks.MaxPending,
		UserAgent: "fangd-webhook/" + version})
	if err != nil {
		return nil, err
	}
	return &commsParts{bus: bus, router: router, webhooks: eng}, nil
}
