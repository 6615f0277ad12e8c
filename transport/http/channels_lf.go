package http

import (
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/kernel"
)

// registryEntry is one adapter as LibreFang's GET /api/channels/registry
// lists it (its ChannelMeta: id, name, description, category, tags, icon,
// protocol, i18n, metadata), with fangd's setup_type and supported. fangd
// keeps no icons, tags or translations: those are empty, not invented.
type registryEntry struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Category    string            `json:"category"`
	Tags        []string          `json:"tags"`
	Icon        string            `json:"icon"`
	Protocol    string            `json:"protocol"`
	I18n        map[string]any    `json:"i18n"`
	Metadata    map[string]string `json:"metadata"`
	DisplayName string            `json:"display_name"`
	SetupType   string            `json:"setup_type"`
	Supported   bool              `json:"supported"`
}

// channelRegistry serves GET /api/channels/registry: the adapters fangd
// knows (one entry per platform, not per configured instance), as a JSON
// array like LibreFang's.
func (s *Server) channelRegistry(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	list, err := svc.List(s.reqCtx(ctx), false)
	if err != nil {
		return err
	}
	out := []registryEntry{}
	for _, v := range list {
		if v.Name != v.Adapter { // an extra instance of an adapter
			continue
		}
		out = append(out, registryEntry{ID: v.Name, Name: v.DisplayName, Description: v.Description, Category: v.Category,
			Tags: []string{}, I18n: map[string]any{}, DisplayName: v.DisplayName, SetupType: v.SetupType, Supported: v.Supported})
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
	return nil
}

// channelQR serves GET /api/channels/{name}/qr, LibreFang's QR-login
// state. Only WhatsApp Web logs in by QR here: with a gateway it answers
// the gateway's login state (as GET /api/channels/whatsapp/qr/status);
// without one, and for every other channel, 404 as LibreFang answers for
// an adapter with no QR sidecar running. Unknown channels are 404 too.
func (s *Server) channelQR(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	v, err := svc.Get(s.reqCtx(ctx), pathName(ctx))
	if err != nil {
		return err
	}
	if v.Adapter != "whatsapp" {
		return &apiError{fasthttp.StatusNotFound, "qr_not_supported", "channel " + v.Name + " has no QR login (only whatsapp logs in by QR)"}
	}
	gw := s.whatsappGateway(s.reqCtx(ctx))
	if gw == "" {
		return &apiError{fasthttp.StatusNotFound, "qr_gateway_not_running",
			"the WhatsApp Web gateway is not configured: set the whatsapp channel's gateway_url or WHATSAPP_WEB_GATEWAY_URL"}
	}
	sid := string(ctx.QueryArgs().Peek("session_id"))
	if len(sid) > 256 {
		return badRequest("invalid_query", "session_id is too long")
	}
	writeJSON(ctx, fasthttp.StatusOK, whatsapp.PollQR(s.reqCtxWait(ctx), gw, sid))
	return nil
}

// sidecarBody is LibreFang's ConfigureSidecarBody: a flat map of string
// values keyed by the sidecar's schema keys, which are the environment
// variable names its adapter reads (TELEGRAM_BOT_TOKEN), or fangd's own
// field keys (bot_token).
type sidecarBody struct {
	Values map[string]string `json:"values"`
}

// configureSidecarChannel serves LibreFang's POST
// /api/channels/sidecar/{name}/configure. LibreFang runs each adapter as
// a child process configured through config.toml and secrets.env; fangd
// runs it in process, so the same values configure the channel named
// name (of the adapter of that name) as POST /api/channels/{name}/configure
// does, secrets into the vault. Nothing needs a restart.
func (s *Server) configureSidecarChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	var body sidecarBody
	if err := decodeJSON(ctx, &body); err != nil {
		return err
	}
	if body.Values == nil {
		return badRequest("invalid_input", `"values" is required: an object of the sidecar's field values`)
	}
	name := pathName(ctx)
	spec, ok := channel.Lookup(name)
	if !ok {
		return kernel.NotFound("Unknown sidecar channel: %s (GET /api/channels/registry lists them)", name)
	}
	byEnv := map[string]string{}
	for _, f := range spec.Fields {
		if f.EnvVar != "" {
			byEnv[f.EnvVar] = f.Key
		}
	}
	fields := make(map[string]any, len(body.Values))
	for k, v := range body.Values {
		if key, ok := byEnv[k]; ok {
			k = key
		}
		if _, dup := fields[k]; dup {
			return badRequest("invalid_field", "field "+k+" is given twice (under its key and its environment variable)")
		}
		fields[k] = v
	}
	res, err := svc.Configure(s.reqCtxWait(ctx), name, map[string]any{"fields": fields})
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("channel %s (%s) configured as a LibreFang sidecar; fields: %s", name, res.Adapter, strings.Join(res.Fields, ", ")))
	// LibreFang's reload plan: fangd applies the change at once, so there
	// is no restart and no environment variable that could shadow a secret
	// (fangd reads the vault, not the process environment, once a secret
	// is configured).
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "saved", "hot_actions_applied": []string{"restart_channel:" + name},
		"restart_required": false, "shadowed_secrets": []string{}, "channel": res.Channel, "adapter": res.Adapter,
		"activated": res.Activated, "created": res.Created, "fields": res.Fields, "note": res.Note})
	return nil
}

// deleteSidecarChannel serves LibreFang's DELETE /api/channels/sidecar/{name}:
// the channel is stopped and removed with its secrets and queued messages
// (as DELETE /api/channels/{name}/configure), answered with LibreFang's
// reload plan; 404 when no channel of that name is configured.
func (s *Server) deleteSidecarChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	name := pathName(ctx)
	if !svc.Has(name) {
		return kernel.NotFound("No configured sidecar channel named %s", name)
	}
	if err := svc.Remove(s.reqCtx(ctx), name); err != nil {
		return err
	}
	auditDetails(ctx, "channel "+name+" deleted (LibreFang sidecar route) with its secrets and queued messages")
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "removed", "hot_actions_applied": []string{"stop_channel:" + name},
		"restart_required": false, "channel": name})
	return nil
}
