using System.CommandLine;
using KeyValueLab.Cli.Commands;
using KeyValueLab.Native;

namespace KeyValueLab.Cli;

/// <summary><c>kvlab</c>: thin commands over the KeyValueLab library.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        // Before anything touches TorchSharp (KVLAB_NATIVE_PATCH=0 turns this off; see TorchRuntime).
        try { TorchRuntime.EnsureLoaded(CachePaths.Root); }
        catch (TorchRuntimeException e)
        {
            Console.Error.WriteLine($"kvlab: {e.Message}");
            return ExitCodes.Runtime;
        }
        // Commands write to the stdout they are handed; whatever else writes to Console.Out goes to stderr, so stdout carries
        // only the command's output (TorchSharp's loader prints its whole search trace to Console.Out when the native library
        // fails to load, e.g. with KVLAB_NATIVE_PATCH=0 on a system that needs the patch).
        var stdout = Console.Out;
        Console.SetOut(Console.Error);
        return Run(args, stdout, Console.Error);
    }

    /// <summary>Every command of kvlab, writing to <paramref name="stdout"/> and <paramref name="stderr"/>.</summary>
    internal static RootCommand Root(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("KeyValueLab: study and change what transformer language models know by updating the keys or the values of their feed-forward layers.");
        root.Subcommands.Add(GenerateCommand.Create(stdout, stderr));
        root.Subcommands.Add(InspectCommand.Create(stdout, stderr));
        root.Subcommands.Add(EditCommand.Create(stdout, stderr));
        root.Subcommands.Add(EditEvalCommand.Create(stdout, stderr));
        root.Subcommands.Add(OrganismCommand.Create(stdout, stderr));
        root.Subcommands.Add(TuneCommand.Create(stdout, stderr));
        root.Subcommands.Add(TuneEvalCommand.Create(stdout, stderr));
        root.Subcommands.Add(StudyCommand.Create(stdout, stderr));
        root.Subcommands.Add(ReportCommand.Create(stdout, stderr));
        root.Subcommands.Add(ExportCommand.Create(stdout, stderr));
        return root;
    }

    /// <summary>Parses and runs one command line; tests call this with their own writers.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = Root(stdout, stderr);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors) stderr.WriteLine($"kvlab: {error.Message}");
            stderr.WriteLine("Try 'kvlab --help'.");
            return ExitCodes.Usage;
        }
        // No termination handler of System.CommandLine: the commands that run long take SIGINT/SIGTERM themselves (Interrupts).
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        return parse.Invoke(config);
    }
}
