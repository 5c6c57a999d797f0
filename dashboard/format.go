package dashboard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/hibiken/asynqmon"
)

// PayloadFormatter shows task payloads in asynqmon: JSON pretty-printed, the
// bytes of inline data as "<N bytes>", and nothing that looks like a secret
// (see redact). Other payloads get asynqmon's default treatment.
var PayloadFormatter = asynqmon.PayloadFormatterFunc(func(_ string, payload []byte) string {
	if s, ok := formatJSON(payload); ok {
		return s
	}
	return asynqmon.DefaultPayloadFormatter.FormatPayload("", payload)
})

// ResultFormatter shows task results (the StoredFile of a transfer) in
// asynqmon the way PayloadFormatter shows payloads.
var ResultFormatter = asynqmon.ResultFormatterFunc(func(_ string, result []byte) string {
	if s, ok := formatJSON(result); ok {
		return s
	}
	return asynqmon.DefaultResultFormatter.FormatResult("", result)
})

// secretKeyRE matches JSON keys whose values are never shown.
var secretKeyRE = regexp.MustCompile(`(?i)secret|passw|token|credential|signature|authorization|api[_-]?key|access[_-]?key|private[_-]?key|session`)

const redacted = "<redacted>"

// formatJSON pretty-prints b with redact applied, or reports false when b is
// not a JSON object or array.
func formatJSON(b []byte) (string, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return "", false
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(redact("", v)); err != nil {
		return "", false
	}
	return strings.TrimSuffix(out.String(), "\n"), true
}

// redact returns v (decoded JSON found under key) fit for display:
//   - a "data" string (tasks.Location.Data, base64) becomes "<N bytes>";
//   - values under keys that name secrets (secretKeyRE) become "<redacted>";
//   - URLs lose their user info and query string (presigned URLs carry
//     their signature there).
func redact(key string, v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = redact(k, x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redact(key, x)
		}
		return out
	case string:
		switch {
		case secretKeyRE.MatchString(key):
			return redacted
		case key == "data":
			if b, err := base64.StdEncoding.DecodeString(v); err == nil {
				return fmt.Sprintf("<%d bytes>", len(b))
			}
			return fmt.Sprintf("<%d characters>", len(v))
		}
		return redactURL(v)
	case nil:
		return nil
	default: // numbers, booleans
		if secretKeyRE.MatchString(key) {
			return redacted
		}
		return v
	}
}

// redactURL strips the user info and the query of an absolute URL; other
// strings are returned as they are.
func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return s
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" {
		return s
	}
	u.User = nil
	u.Fragment = ""
	q := u.RawQuery
	u.RawQuery = ""
	out := u.String()
	if q != "" {
		out += "?" + redacted
	}
	return out
}
