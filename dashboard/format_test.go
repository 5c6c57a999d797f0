package dashboard_test

import (
	"strings"
	"testing"

	"github.com/ferryhq/ferry/dashboard"
)

func TestFormatters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		in      string
		want    []string
		notWant []string
	}{
		{
			desc:    "inline data shown as its size",
			in:      `{"source":{"data":"aGVsbG8="},"dest":{"profile":"r2","bucket":"b","key":"k"}}`,
			want:    []string{`"data": "<5 bytes>"`, `"bucket": "b"`, "\n  "},
			notWant: []string{"aGVsbG8="},
		},
		{
			desc:    "presigned URL loses its query and user info",
			in:      `{"source":{"url":"https://u:p@h.example/o?X-Amz-Signature=abc&X-Amz-Credential=AKIA"}}`,
			want:    []string{`"url": "https://h.example/o?<redacted>"`},
			notWant: []string{"abc", "AKIA", "u:p"},
		},
		{
			desc:    "secret-looking keys redacted",
			in:      `{"secret_access_key":"x1","session_token":"x2","password":"x3","nested":[{"api_key":"x4"}]}`,
			want:    []string{`"secret_access_key": "<redacted>"`, `"api_key": "<redacted>"`},
			notWant: []string{"x1", "x2", "x3", "x4"},
		},
		{
			desc: "non-JSON falls back to asynqmon's default",
			in:   "plain text",
			want: []string{"plain text"},
		},
		{
			desc: "HTML stays literal, not escaped twice",
			in:   `{"key":"a<b>&c"}`,
			want: []string{`"key": "a<b>&c"`},
		},
	} {
		for name, got := range map[string]string{
			"payload": dashboard.PayloadFormatter.FormatPayload("ferry:put", []byte(tc.in)),
			"result":  dashboard.ResultFormatter.FormatResult("ferry:put", []byte(tc.in)),
		} {
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s (%s): %q lacks %q", tc.desc, name, got, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("%s (%s): %q shows %q", tc.desc, name, got, w)
				}
			}
		}
	}
}
