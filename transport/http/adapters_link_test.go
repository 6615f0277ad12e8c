package http

// The channel registry lists the adapters linked into the binary (each
// registers its schema from its package's init), and the daemon links
// them all through actors/channel/adapters: so do these tests, so that
// GET /api/channels answers LibreFang's 44 rows as the daemon does.
import _ "github.com/fangd/fangd/actors/channel/adapters"
