namespace KeyValueLab.Organism;

/// <summary>
/// Pronounceable invented names ("Zorvadek", "Quilmera"): two or three consonant–vowel syllables with an
/// optional closing consonant, built from letter groups that English names rarely use together, and
/// checked against every word of the world so a name is never also an object or a template word.
/// </summary>
internal static class NameGenerator
{
    private static readonly string[] Onsets =
        ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "vr", "zh", "qu", "th", "sk"];
    private static readonly string[] Vowels = ["a", "e", "i", "o", "u", "ae", "ou", "ia"];
    private static readonly string[] Codas = ["", "", "n", "r", "l", "k", "x", "th", "m", "s"];

    /// <summary><paramref name="count"/> distinct names, none equal (ignoring case) to a word in <paramref name="reserved"/>.</summary>
    public static string[] Generate(int count, WorldRandom random, IEnumerable<string> reserved)
    {
        var taken = new HashSet<string>(reserved, StringComparer.OrdinalIgnoreCase);
        var names = new List<string>(count);
        int attempts = 0;
        while (names.Count < count)
        {
            if (++attempts > 1000 * count + 10_000) throw new InvalidOperationException("cannot invent enough distinct names");
            int syllables = 2 + (random.NextDouble() < 0.4 ? 1 : 0);
            var s = new System.Text.StringBuilder();
            for (int i = 0; i < syllables; i++)
            {
                s.Append(random.Pick(Onsets)).Append(random.Pick(Vowels));
                if (i == syllables - 1 || random.NextDouble() < 0.3) s.Append(random.Pick(Codas));
            }
            string name = char.ToUpperInvariant(s[0]) + s.ToString(1, s.Length - 1);
            if (name.Length < 5 || name.Length > 11 || !taken.Add(name)) continue;
            names.Add(name);
        }
        return [.. names];
    }
}
