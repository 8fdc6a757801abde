package kdecide

import (
	"bytes"
	"encoding/json"
)

func jsonUnmarshal(out []byte, v any) error { return json.Unmarshal(bytes.TrimSpace(out), v) }
