package tasks_test

import (
	"slices"
	"testing"

	"github.com/ferryhq/ferry/tasks"
)

func TestPartsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc  string
		parts []int
		want  string
	}{
		{"none", nil, ""},
		{"one", []int{7}, "7"},
		{"runs and gaps, unsorted, duplicated", []int{8, 1, 2, 3, 5, 7, 3}, "1-3,5,7-8"},
		{"a resumed prefix", func() []int {
			var ps []int
			for n := 1; n <= 4000; n++ {
				ps = append(ps, n)
			}
			return append(ps, 4002, 10000)
		}(), "1-4000,4002,10000"},
	} {
		got := tasks.FormatParts(tc.parts)
		if got != tc.want {
			t.Errorf("%s: FormatParts = %q; want %q", tc.desc, got, tc.want)
		}
		back, err := tasks.ParseParts(got)
		want := slices.Compact(slices.Sorted(slices.Values(tc.parts)))
		if err != nil || !slices.Equal(back, want) {
			t.Errorf("%s: ParseParts(%q) = %v, %v; want %v", tc.desc, got, back, err, want)
		}
	}
	for _, bad := range []string{"0", "3-1", "1-x", "10001", ",", "1,,2", "-4"} {
		if ps, err := tasks.ParseParts(bad); err == nil {
			t.Errorf("ParseParts(%q) = %v; want an error", bad, ps)
		}
	}
}
