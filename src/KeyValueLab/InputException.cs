namespace KeyValueLab;

/// <summary>
/// Bad input from the user: a corrupt checkpoint, a wrong config, a malformed dataset row, an unknown
/// architecture. The message is one line, "FILE: problem"; <c>kvlab</c> prints it and exits with code 2.
/// </summary>
public class InputException : Exception
{
    /// <summary>The file (or folder) at fault, as the user named it.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong with it, in one line.</summary>
    public string Problem { get; }

    public InputException(string filePath, string problem, Exception? inner = null)
        : base($"{filePath}: {OneLine(problem)}", inner)
    {
        FilePath = filePath;
        Problem = OneLine(problem);
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}
