@echo off
rem Aether-V provisioning bootstrap for Windows guests.
rem Windows Setup runs %WINDIR%\Setup\Scripts\SetupComplete.cmd once, as SYSTEM, at the end of
rem setup (after sysprep /generalize of the golden image). Put this file there in the golden
rem image. It finds the Aether-V provisioning ISO (WindowsProvisioning.iso) among the drives
rem and installs the agent from it; the agent then runs as a scheduled task until the
rem provisioning handshake has finished. Nothing secret passes through this file.
setlocal
set LOG=%ProgramData%\Aether-V\Agent\setupcomplete.log
if not exist "%ProgramData%\Aether-V\Agent" mkdir "%ProgramData%\Aether-V\Agent"
for %%D in (D E F G H I J K L M N O P Q R S T U V W X Y Z) do (
    if exist "%%D:\Install-AethervAgent.ps1" if exist "%%D:\version" (
        echo %DATE% %TIME% installing the agent from %%D:>> "%LOG%"
        "%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "%%D:\Install-AethervAgent.ps1" >> "%LOG%" 2>&1
        goto :done
    )
)
echo %DATE% %TIME% no Aether-V provisioning media found>> "%LOG%"
:done
endlocal
exit /b 0
