using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;

namespace KeyValueLab.Cli;

/// <summary>Process exit codes of <c>kvlab</c>, by cause (docs/reliability.md).</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>An unexpected failure inside kvlab (a bug): the message says what.</summary>
    public const int Internal = 1;
    /// <summary>Bad input: a file, a config, a dataset row or a command-line value.</summary>
    public const int BadInput = 2;
    /// <summary>Command-line usage error (unknown option, missing value).</summary>
    public const int Usage = 2;
    /// <summary>The native tensor runtime could not be loaded on this system.</summary>
    public const int Runtime = 3;
    /// <summary>The machine, not the input: disk full, a read-only or unwritable folder, an I/O error, out of memory.</summary>
    public const int Environment = 4;
    /// <summary>Stopped by Ctrl-C (SIGINT) or SIGTERM; what finished is stored and the next run resumes.</summary>
    public const int Interrupted = 130;
}

/// <summary>Runs a command body and turns failures into one line on stderr and an exit code.</summary>
internal static class CommandRunner
{
    /// <summary>The longest message kvlab prints; libtorch's run to several KB with a C++ backtrace.</summary>
    private const int MaxMessage = 400;

    public static int Run(TextWriter stderr, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (InputException e)
        {
            stderr.WriteLine($"kvlab: {Short(e.Message)}");
            return ExitCodes.BadInput;
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"kvlab: {Short(e.Message)}");
            return ExitCodes.Usage;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("kvlab: interrupted; finished units are stored and the same command resumes");
            return ExitCodes.Interrupted;
        }
        catch (Exception e) when (IsNativeLoadFailure(e))
        {
            // TorchSharp's native library failed to load (TorchSharp wraps it in its type initializer): say so, in the loader's words.
            string reason = Native.TorchRuntime.LoadFailureReason() ?? Innermost(e).Message.Split('\n')[0].Trim();
            stderr.WriteLine($"kvlab: the native tensor runtime could not be loaded: {reason}");
            return ExitCodes.Runtime;
        }
        catch (Exception e) when (EnvironmentFailure(e) is string line)
        {
            stderr.WriteLine($"kvlab: {line}");
            return ExitCodes.Environment;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"kvlab: internal error: {e.GetType().Name}: {Short(e.Message)}");
            if (System.Environment.GetEnvironmentVariable("KVLAB_DEBUG") == "1") stderr.WriteLine(e);
            return ExitCodes.Internal;
        }
    }

    /// <summary>
    /// The line for a failure that comes from the machine (disk full, read-only folder, I/O error, out of memory), or null.
    /// .NET's I/O messages name the path; SQLite's name the store through the exception kvlab wraps around them.
    /// </summary>
    internal static string? EnvironmentFailure(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            switch (x)
            {
                case OutOfMemoryException:
                    return "out of memory: the model or the data does not fit in this machine's memory";
                case UnauthorizedAccessException:
                case IOException and not FileNotFoundException and not DirectoryNotFoundException:
                    return Short(x.Message);
                case SqliteException s when Study.ResultsStore.IsEnvironment(s):
                    return Short($"{Study.ResultsStore.FileName}: {s.Message}");
                case ExternalException when x.Message.Contains("can't allocate memory", StringComparison.Ordinal)
                                           || x.Message.Contains("not enough memory", StringComparison.OrdinalIgnoreCase):
                    return "out of memory: " + Short(x.Message);
            }
        }
        return null;
    }

    /// <summary>A message's first line, cut at its first sentence when longer than <see cref="MaxMessage"/>.</summary>
    internal static string Short(string message)
    {
        string line = message.ReplaceLineEndings("\n").Split('\n')[0].Trim();
        if (line.Length <= MaxMessage) return line;
        int stop = line.IndexOf(". ", StringComparison.Ordinal);
        return stop > 0 && stop < MaxMessage ? line[..(stop + 1)] : line[..MaxMessage] + "…";
    }

    private static bool IsNativeLoadFailure(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is DllNotFoundException || x is TypeInitializationException { TypeName: { } type } && type.StartsWith("TorchSharp", StringComparison.Ordinal))
                return true;
        return false;
    }

    private static Exception Innermost(Exception e) => e.InnerException is null ? e : Innermost(e.InnerException);
}
